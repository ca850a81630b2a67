package pin_test

import (
	"fmt"
	"time"

	"github.com/incpathd/incpathd/fcgi"
	"github.com/incpathd/incpathd/pin"
)

// How a request's docroot is chosen: name the front end, ask the policy,
// and resolve only when the policy says so.
func Example() {
	policy := &pin.Policy{DocrootList: []string{"nginx"}} // nginx sends $realpath_root
	resolver := &pin.Resolver{Every: 2 * time.Second}

	params := []fcgi.Pair{
		{Name: "SERVER_SOFTWARE", Value: "Apache/2.4.62 (Debian)"},
		{Name: "DOCUMENT_ROOT", Value: "/"},
	}
	name := pin.Name(params)
	switch mode := policy.Mode(name); mode {
	case pin.Realpath:
		docroot, err := resolver.Resolve(params[1].Value)
		fmt.Println(name, mode, docroot, err)
	default:
		fmt.Println(name, mode)
	}
	// Output: apache realpath / <nil>
}

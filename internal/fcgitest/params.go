package fcgitest

import "github.com/incpathd/incpathd/fcgi"

// WithoutParam returns a copy of params without any pair called name.
func WithoutParam(params []fcgi.Pair, name string) []fcgi.Pair {
	var out []fcgi.Pair
	for _, p := range params {
		if p.Name != name {
			out = append(out, p)
		}
	}
	return out
}

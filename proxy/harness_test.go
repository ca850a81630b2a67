package proxy

import (
	"github.com/incpathd/incpathd/fcgi"
)

// nginxLike are the params nginx sends for GET /index.php?x=1 under root.
func nginxLike(root string) []fcgi.Pair {
	return []fcgi.Pair{
		{Name: "QUERY_STRING", Value: "x=1"},
		{Name: "REQUEST_METHOD", Value: "GET"},
		{Name: "CONTENT_TYPE", Value: ""},
		{Name: "CONTENT_LENGTH", Value: ""},
		{Name: "SCRIPT_NAME", Value: "/index.php"},
		{Name: "REQUEST_URI", Value: "/index.php?x=1"},
		{Name: "DOCUMENT_URI", Value: "/index.php"},
		{Name: "DOCUMENT_ROOT", Value: root},
		{Name: "SERVER_PROTOCOL", Value: "HTTP/1.1"},
		{Name: "GATEWAY_INTERFACE", Value: "CGI/1.1"},
		{Name: "SERVER_SOFTWARE", Value: "nginx/1.22.1"},
		{Name: "REMOTE_ADDR", Value: "127.0.0.1"},
		{Name: "REMOTE_PORT", Value: "40000"},
		{Name: "SERVER_ADDR", Value: "127.0.0.1"},
		{Name: "SERVER_PORT", Value: "80"},
		{Name: "SERVER_NAME", Value: "localhost"},
		{Name: "REDIRECT_STATUS", Value: "200"},
		{Name: "SCRIPT_FILENAME", Value: root + "/index.php"},
		{Name: "HTTP_HOST", Value: "localhost"},
		{Name: "HTTP_USER_AGENT", Value: "test"},
	}
}

// Package fcgi implements the FastCGI protocol for incpathd: the wire format
// (record.go, params.go), the server side that accepts a web server's
// connections (server.go, conn.go, watch.go for the abort watch,
// request.go, response.go), and the client side that talks to a FastCGI
// application server such as php-fpm: a pool of connections (pool.go) and
// one exchange on a connection, Conn.RoundTrip (client.go), which the proxy,
// the health check and the calls of incpathd's own script all use. cgi.go
// reads the CGI headers of an answer (ResponseStatus, CutHeaders).
//
// The two sides meet only through small interfaces: RoundTrip reads a
// request body as a Stream, is cut short through an Aborter and writes the
// answer to a Sink, which Body, Request and ResponseWriter satisfy; it
// never touches the web server's connection.
//
// The package knows records and name-value pairs, not PHP: what the params
// mean is decided by the packages that use it. FastCGI records are written
// and read only here (and in the test support packages).
package fcgi

// Package fcgi implements the FastCGI wire format, the server side that
// accepts a web server's connections, and a pool of upstream connections to
// a FastCGI application server such as php-fpm.
//
// The package knows records and name-value pairs, not PHP: what the params
// mean is decided by the packages that use it.
package fcgi

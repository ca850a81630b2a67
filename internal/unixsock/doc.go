// Package unixsock creates the unix sockets incpathd listens on: the
// FastCGI listener, the control endpoint and the metrics endpoint.
package unixsock

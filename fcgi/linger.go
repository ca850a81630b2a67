package fcgi

import (
	"io"
	"time"
)

// Bounds of lingerClose.
const (
	lingerTimeout = 2 * time.Second
	lingerBytes   = 1 << 20
)

// lingerClose prepares the close of a connection on which the web server
// may still be sending the body of a request that was answered without
// reading it: it closes the write side, so that the web server reads the
// end of the stream after END_REQUEST, then reads and discards what still
// arrives, until the web server closes or lingerTimeout or lingerBytes is
// reached. The caller closes the connection.
//
// Closing at once would make the kernel answer the web server's next write
// with a reset (a broken pipe over a unix socket), and a web server that is
// still writing fails a request it has already been answered: Apache's
// mod_proxy_fcgi sends the empty STDIN record of a GET after the params,
// and when the application answered between the two, Apache turned the
// answer into a 503 (seen with Apache 2.4.71 behind incpathd, php-fpm
// answering a GET that does not read its body). php-fpm itself drains the
// same way before it closes (fcgi_close in main/fastcgi.c).
func (c *conn) lingerClose() {
	if cw, ok := c.rwc.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil {
			return
		}
	}
	c.rwc.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.CopyN(io.Discard, c.rwc, lingerBytes)
}

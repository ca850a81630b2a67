package fcgi

// NewRawIO is newRawIO, for the tests of package fcgi_test.
var NewRawIO = newRawIO

// IsRawIO reports whether rw is a rawIO.
func IsRawIO(rw any) bool { _, ok := rw.(*rawIO); return ok }

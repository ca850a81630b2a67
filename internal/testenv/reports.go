package testenv

// IndexReport is the JSON that index.php prints. Pointer fields are nil when
// PHP had no value: no include_path entry found lib_release.php, a param did
// not arrive.
type IndexReport struct {
	Release        string  `json:"release"`         // of index.php itself
	IncludeRelease *string `json:"include_release"` // of include/lib_release.php via include_path
	IncludeFile    *string `json:"include_file"`    // its __FILE__
	DocrootRelease *string `json:"docroot_release"` // of DOCUMENT_ROOT/release.txt
	File           string  `json:"file"`            // __FILE__ of index.php
	DocumentRoot   *string `json:"document_root"`
	ScriptFilename *string `json:"script_filename"`
	ScriptName     *string `json:"script_name"`
	PathTranslated *string `json:"path_translated"`
	PathInfo       *string `json:"path_info"`
	ServerSoftware *string `json:"server_software"`
	IncludePath    string  `json:"include_path"`
	OpenBasedir    string  `json:"open_basedir"`
	IncpathSAPI    *string `json:"incpath_sapi"` // the INCPATH_SAPI param
	SAPI           string  `json:"sapi"`         // PHP_SAPI
	PID            int     `json:"pid"`          // the worker's
}

// EchoReport is the JSON that echo.php prints.
type EchoReport struct {
	SHA256        string `json:"sha256"` // hex, of the body PHP read
	Length        int64  `json:"length"` // bytes PHP read
	ContentLength *int64 `json:"content_length"`
	Method        string `json:"method"`
}

// InfoReport is the JSON that info.php prints.
type InfoReport struct {
	SAPI          string         `json:"sapi"`
	Version       string         `json:"version"`
	PID           int            `json:"pid"`
	OpcacheLoaded bool           `json:"opcache_loaded"` // the extension is loaded
	OpcacheStatus bool           `json:"opcache_status"` // opcache_get_status() returned an array
	LoadedINI     any            `json:"loaded_ini"`     // php_ini_loaded_file(): a path or false
	ScannedINI    any            `json:"scanned_ini"`    // php_ini_scanned_files(): a list or false
	INI           map[string]any `json:"ini"`            // ?ini= values: strings, or false if unknown
}

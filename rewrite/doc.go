// Package rewrite pins the FastCGI params of one PHP request to one release
// directory of a site deployed by symlink swap.
//
// With a docroot such as /var/www/site/htdocs that is a symlink into
// releases/A, PHP resolves the link again for the script, for every include
// through include_path, and in its realpath and opcache caches, so a request
// running while a deploy flips the link can mix files of two releases, or
// keep serving the old one. The caller resolves the docroot once per
// request; [Config.Rewrite] then rewrites the params so that PHP only sees
// the resolved directory:
//
//   - DOCUMENT_ROOT becomes the resolved docroot.
//   - SCRIPT_FILENAME and PATH_TRANSLATED get their docroot prefix replaced,
//     when they lie under the docroot: the prefix must end at a path
//     component, so a docroot of /srv/cur leaves /srv/current/x alone.
//     Apache's "proxy:fcgi://host" prefix of SCRIPT_FILENAME is kept and
//     the path after it pinned (see Front ends).
//   - In PHP_VALUE and PHP_ADMIN_VALUE, the ini keys of [Config.PinINI]
//     (include_path, open_basedir, auto_prepend_file, auto_append_file)
//     get the search pattern replaced by the resolved docroot, as the PHP
//     extension incpath did for include_path.
//   - HTTP_PROXY is dropped (httpoxy) unless [Config.KeepHTTPProxy].
//
// The package does no I/O: params in, params out.
//
// # What php-fpm does with the params
//
// php-fpm appends "\n" to PHP_VALUE and PHP_ADMIN_VALUE and parses them as
// INI text, applying each entry as it goes and stopping at the first syntax
// error. When a param occurs twice it keeps the last one whole, so a second
// PHP_VALUE silently discards the first one's lines. And it keeps
// PHP_VALUE settings in the worker process after the request ends: a
// pinned include_path must be sent on every request, or the next request
// that sends none runs with the last one's release. Hence:
//
//   - Each param name is sent once, at the position of its first occurrence.
//     An ordinary param carries the value of its last occurrence, which is
//     what php-fpm would have used. PHP_VALUE and PHP_ADMIN_VALUE carry the
//     entries of all their occurrences, one per line: the last occurrence's
//     first, then the earlier ones' without the keys a later one sets. A
//     broken line in an earlier occurrence, where php-fpm's parser stops,
//     then only cuts off entries php-fpm alone would never have applied.
//   - Of each pinned key only the last entry is kept, written back as
//     key="value". Pinned entries come first in the value (an added
//     include_path, then the keys in the order of [Config.PinINI]), so that
//     a broken line after them, which stops php-fpm's parser, cannot undo
//     the pin.
//   - Entries of other keys, comments and anything else are kept verbatim,
//     byte for byte, in their order: they are not requoted, because
//     unquoted values such as error_reporting=E_ALL & ~E_NOTICE are
//     expressions, and a key such as extension may legitimately repeat.
//     Blank lines are dropped, and entries are separated by "\n".
//   - If the request sets no include_path and [Config.IncludePath] is set,
//     an include_path entry built from it is added to PHP_VALUE, which is
//     appended to the params if absent; so is an entry for every other key
//     of [Config.PinINI] the request does not set and [Config.Defaults]
//     has a value for.
//
// A PHP_VALUE or PHP_ADMIN_VALUE that occurs once, has nothing to pin and
// gets no include_path added is sent unchanged.
//
// DOCUMENT_ROOT is only rewritten, never added: the caller knows the
// unresolved docroot from it.
//
// # Reading and writing INI values
//
// Entries are split where PHP's INI scanner ends them: at "\r", "\n" or
// "\r\n", but not inside a quoted string, so a line inside an unpinned
// multi-line string is never taken for a pinned key; after the ']' of a
// [section], where another entry may follow on the same line; and at a tab
// in a key ("x\tinclude_path=/a" is the word x, then include_path). A
// quoted section name is refused. Keys are compared
// exactly, after trimming spaces and tabs, as PHP looks them up; an entry
// such as include_path[]=x is not the include_path key (php-fpm rejects it
// anyway).
//
// A pinned value is read as the literal string PHP would assign:
// double-quoted, single-quoted or unquoted (up to a ';' comment, blanks
// trimmed; true, on and yes read as "1"; false, off, no, none and null as
// ""). Rewrite fails with [ErrINIValue], rather than forward a value that
// may still point through the symlink, when a pinned value is not a plain
// literal to PHP (escapes, ${...} expansion, operators, quotes followed by
// more text, a string over several lines) or cannot be written back
// between double quotes (it holds '"', '\', a line break, a NUL or "${").
// It also fails on a quoted string that is never closed, pinned or not:
// php-fpm stops parsing there, and once occurrences are merged the string
// would swallow the lines of the next one.
//
// # Differences from incpath
//
// incpath replaced the first occurrence of its pattern in include_path.
// Rewrite replaces every occurrence, in every pinned key, because an
// include_path names the docroot once per entry and any entry left
// unreplaced would still resolve through the link:
//
//	include_path=".:/var/www/site/htdocs/../include:/var/www/site/htdocs/lib"
//
// A pattern that is a path (it starts with '/')
// only matches a whole path of a ':'-separated list, or the start of one:
// it must begin the value or follow a ':' (or a '/', as in phar:///path),
// and end the value or be followed by '/' or ':'. So /srv/cur matches
// neither inside /srv/current nor inside /x/srv/cur.
// Trailing slashes of the pattern and the docroots are ignored. A pattern
// of "/" replaces nothing.
//
// A path pattern above the unresolved docroot (/srv/site/current for a
// docroot of /srv/site/current/public) is replaced by its own release
// directory: the resolved docroot less the path below the pattern
// (/srv/site/releases/A for /srv/site/releases/A/public). Rewrite fails
// with [ErrPattern] when the resolved docroot does not end in that path.
//
// incpath left include_path alone and served the request when it could not
// pin it; Rewrite refuses the request ([ErrINIValue], [ErrUnsafePath],
// [ErrDocroot]).
//
// # Front ends
//
// What each front end sends, as far as pinning is concerned (each case has
// a golden file, testdata/rewrite/frontend_*.txt, made from what the real
// server sent; cmd/incpathd/frontends_test.go runs them all for real):
//
//   - nginx sends what its configuration says: SCRIPT_FILENAME is usually
//     $document_root$fastcgi_script_name, or $realpath_root... when nginx
//     resolved the docroot itself.
//   - Apache 2.4 mod_proxy_fcgi, with SetHandler "proxy:fcgi://host:port" or
//     "proxy:unix:/path|fcgi://localhost", sends SCRIPT_FILENAME as
//     "proxy:fcgi://host:port/var/www/site/current/index.php", and through a
//     balancer as "proxy:balancer://name/...". php-fpm strips that prefix
//     itself (PHP bugs 54152 and 62172) and then treats the request as
//     coming from mod_proxy_fcgi, which changes how it reads PATH_INFO and
//     REDIRECT_URL. Rewrite keeps the prefix and pins the path after it, so
//     php-fpm sees the request as Apache sent it, only pinned. The prefix
//     is recognised by its syntax, as php-fpm does, and not by the front
//     end's name: a set-up that renames its front end with INCPATH_SAPI must
//     not lose its pin. Apache's CONTEXT_DOCUMENT_ROOT is left alone.
//   - lighttpd mod_fastcgi with "broken-scriptfilename" => "enable", the
//     setting of Debian's PHP snippets, sends SCRIPT_FILENAME with PATH_INFO
//     still on it (.../index.php/a/b); php-fpm walks back to the script. The
//     docroot prefix is replaced all the same.
//   - Caddy's php_fastcgi splits the path at ".php" and sends SCRIPT_FILENAME
//     as the root plus the script and PATH_TRANSLATED as the root plus
//     PATH_INFO, as nginx does.
//   - cgi-fcgi, libfcgi's command-line client, sends its environment.
//
// # Path safety
//
// A DOCUMENT_ROOT or SCRIPT_FILENAME holding a NUL byte or a ".." component,
// or a PATH_TRANSLATED holding a NUL byte, fails with [ErrUnsafePath]:
// php-fpm reads params as C strings, and a ".." would climb out of the
// release directory the request was pinned to. The checks are package
// pathsafe's, shared with the rest of incpathd.
//
// # Reading the code
//
// One request's rewrite is a plan (plan.go), run pass by pass: start (the
// docroots and the pattern), classify (kinds, unsafe paths, duplicates),
// readINI and sizePaths (what each new value will be, and its length),
// checkSizes, write (every new value into one buffer) and send (each name
// once, into dst). A change to one rule is a change to one pass; the
// INI reading is ini.go, the path rules path.go and pin.go, the duplicate
// table dedup.go. What depends on the Config alone (each pinned key's
// default, the entry written for it, the PHP_VALUE added to a request
// without one) is derived once by [Config.Prepare] (prepared.go); a
// [Prepared] pins exactly as its Config, and [Config.Rewrite] derives the
// same per call, without the rendered entries. BenchmarkRewrite and
// BenchmarkRewriteDefaults guard the cost.
//
// # Cost
//
// Rewrite uses no maps, no regular expressions and no fmt on its success
// path. classify is the only pass over every param; unless names repeat,
// the passes after it visit only the few params it recorded, and send
// copies the runs between them. It allocates nothing when no value
// changes, and otherwise once: the new SCRIPT_FILENAME, PATH_TRANSLATED,
// PHP_VALUE and PHP_ADMIN_VALUE are written into one buffer, sized in
// advance, and sliced. dst grows once if its capacity is short of
// len(in)+1; reuse it, or rewrite in place with dst = in[:0]. Duplicate
// names are found with a small hash table on the stack; requests of more
// than 128 params and configs of more than 8 pinned keys allocate their
// tables.
package rewrite

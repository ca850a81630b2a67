// Package testenv starts real nginx and php-fpm processes for tests and lays
// out a PHP site deployed the way incpathd expects: releases/<name>/ with a
// current symlink that is flipped atomically.
//
// The other front ends start the same way, from Debian's packages: Apache
// 2.4 (StartApache), lighttpd (StartLighttpd), Caddy (StartCaddy), nginx
// around a configuration written elsewhere (StartNginxServer), and
// libfcgi's cgi-fcgi client (CGIFCGI). ReadModuleFile and Fill turn the
// configuration examples of the repository into the servers' configuration.
//
// Everything a test starts lives in its t.TempDir(), listens on loopback,
// and is stopped and waited for in t.Cleanup, failed tests included. Each
// server runs in its own process group, so its workers are stopped with it,
// and is sent SIGTERM if the test binary dies without running cleanups (a
// -timeout panic, say). The package is meant for Linux; elsewhere the servers
// still run but without those two guarantees.
//
// Binaries are looked up with RequireBinary. When one is missing the test is
// skipped with the name of the Debian package to install, or fails when the
// environment variable CI is "true".
//
// The PHP site comes from testdata/site at the module root. NewSite copies it
// into every release and writes release.txt, holding the release name, at the
// top of each one; every script reports its release by reading the
// release.txt next to its own resolved path:
//
//   - index.php: JSON with the CGI variables that locate the script, the
//     release of the script, of include/lib_release.php found through
//     include_path, and of release.txt read through DOCUMENT_ROOT, plus
//     include_path, open_basedir, the INCPATH_SAPI param and the worker pid.
//   - torture.php: one line such as "A A A A": the script, an include before a
//     20 ms pause, another include after it, release.txt via DOCUMENT_ROOT.
//   - late.php?ready=PATH: torture.php with a pause the test ends; the
//     script creates PATH after the first include and makes the second once
//     the test has removed it (see LateInclude).
//   - big.php?mb=N (or ?bytes=N): N MiB of the PatternReader bytes, streamed.
//   - echo.php: the sha256 and length of the request body, hashed as it
//     streams in.
//   - slow.php?ms=N: sleeps, then prints the release.
//   - info.php?ini=a,b: opcache state, loaded ini files and setting values.
//   - server.php?names=A,B: the names of every $_SERVER entry, and the
//     values of A and B in $_SERVER and getenv() (ServerReport).
//   - cli.php (php CLI): a JSON line with the releases of the script and of
//     include/lib_release.php and the working directory; after a line on
//     stdin, a second one with include/lib_after.php; exits with argv[1].
//
// The generated php.ini sets no include_path; tests pass one in PHP_VALUE,
// for example "include_path=.:<docroot>/include", so that include_path
// resolution is what they measure.
package testenv

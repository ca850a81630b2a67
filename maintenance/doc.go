// Package maintenance takes a site down for maintenance in front of PHP:
// while a flag file exists, every request is answered with 503, a
// Retry-After header and a page, and php-fpm is not contacted. It is
// lighttpd's mod_magnet maintenance recipe, built in.
//
// The flag file is watched with inotify on its directory, so turning the
// mode on or off (touch, rm, rename) costs requests nothing and takes
// effect as soon as the event arrives; where the directory cannot be
// watched, the file is checked with a stat every PollEvery instead.
package maintenance

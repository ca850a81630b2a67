<?php
// One page of the two-release sample site (docker/compose.yaml). Each
// release holds release.txt with its name; every line below names the
// release that answered it. With incpathd in front they always agree, even
// while `current` is flipped.
//
// ?sleep=N (seconds, at most 30) prints the first line at once, then waits
// before including lib.php: flip `current` meanwhile, and the include, the
// late one that goes wrong without incpathd, still finds the release the
// request started on.
header('Content-Type: text/plain');
$sleep = min(30, max(0, (int)($_GET['sleep'] ?? 0)));
if ($sleep > 0) {
    header('X-Accel-Buffering: no'); // nginx passes the first line on at once
    while (ob_get_level() > 0) {
        ob_end_flush();
    }
    echo 'started: ', trim(file_get_contents(__DIR__ . '/release.txt')), "\n";
    flush();
    sleep($sleep);
}
$lib = include 'lib.php'; // found only through include_path
echo 'release: ', trim(file_get_contents(__DIR__ . '/release.txt')), "\n";
echo 'include_path: ', $lib['release'], "\n";
echo 'DOCUMENT_ROOT: ', trim(file_get_contents($_SERVER['DOCUMENT_ROOT'] . '/release.txt')), "\n";
echo 'document_root: ', $_SERVER['DOCUMENT_ROOT'], "\n";
echo 'script_filename: ', $_SERVER['SCRIPT_FILENAME'], "\n";
echo 'include_path_setting: ', get_include_path(), "\n";

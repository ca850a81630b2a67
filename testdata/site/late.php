<?php
// torture.php with a pause that the test ends: it includes lib_release.php,
// creates the file named by ?ready= (an absolute path that must not exist
// yet), waits until the test has removed it (30 s at most), then includes
// lib_after.php. A test flips the release in between and checks that the
// late include still comes from the release the request started in. Prints
// one line such as "A A A A", like torture.php.
$ready = (string) ($_GET['ready'] ?? '');
if ($ready === '' || $ready[0] !== '/' || file_exists($ready)) {
    http_response_code(400);
    exit("?ready= must name a file that does not exist yet\n");
}
$script = trim((string) file_get_contents(__DIR__ . '/release.txt'));
$before = @include 'lib_release.php';
touch($ready);
for ($i = 0; $i < 3000; $i++) {
    clearstatcache(true, $ready);
    if (!file_exists($ready)) {
        break;
    }
    usleep(10000);
}
$after = @include 'lib_after.php';

$viaDocroot = '-';
$docroot = $_SERVER['DOCUMENT_ROOT'] ?? '';
if ($docroot !== '') {
    $s = @file_get_contents($docroot . '/release.txt');
    if ($s !== false) {
        $viaDocroot = trim($s);
    }
}

header('Content-Type: text/plain');
echo $script, ' ',
    is_array($before) ? $before['release'] : '-', ' ',
    is_array($after) ? $after['release'] : '-', ' ',
    $viaDocroot, "\n";

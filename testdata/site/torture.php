<?php
// Prints one line naming the release of four things, in this order: this
// script, a file included through include_path, a second file included
// through include_path after a pause (?us=N microseconds, default 20000),
// and release.txt read through DOCUMENT_ROOT. A request served by one
// release prints "A A A A"; "-" marks a lookup that failed.
$script = trim((string) file_get_contents(__DIR__ . '/release.txt'));
$before = @include 'lib_release.php';
usleep(isset($_GET['us']) ? max(0, (int) $_GET['us']) : 20000);
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

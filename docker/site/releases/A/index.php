<?php
// One page of the two-release sample site (docker/compose.yaml). Each
// release holds release.txt with its name; every line below names the
// release that answered it. With incpathd in front they always agree, even
// while `current` is flipped.
$lib = include 'lib.php'; // found only through include_path
header('Content-Type: text/plain');
echo 'release: ', trim(file_get_contents(__DIR__ . '/release.txt')), "\n";
echo 'include_path: ', $lib['release'], "\n";
echo 'DOCUMENT_ROOT: ', trim(file_get_contents($_SERVER['DOCUMENT_ROOT'] . '/release.txt')), "\n";
echo 'document_root: ', $_SERVER['DOCUMENT_ROOT'], "\n";
echo 'script_filename: ', $_SERVER['SCRIPT_FILENAME'], "\n";
echo 'include_path_setting: ', get_include_path(), "\n";

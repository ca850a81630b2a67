<?php
// Reports what PHP saw for this request as one JSON object: the CGI
// variables that locate the script, the release of this script (read next to
// its own resolved path), the release of a file found through include_path,
// the release of release.txt read through DOCUMENT_ROOT, and the settings
// that decide how paths resolve.
$release = trim((string) file_get_contents(__DIR__ . '/release.txt'));

// lib_release.php lives in include/, so only an include_path entry that
// names that directory can find it.
$inc = @include 'lib_release.php';

$docroot = $_SERVER['DOCUMENT_ROOT'] ?? '';
$docrootRelease = null;
if ($docroot !== '') {
    $s = @file_get_contents($docroot . '/release.txt');
    if ($s !== false) {
        $docrootRelease = trim($s);
    }
}

header('Content-Type: application/json');
echo json_encode([
    'release' => $release,
    'include_release' => is_array($inc) ? $inc['release'] : null,
    'include_file' => is_array($inc) ? $inc['file'] : null,
    'docroot_release' => $docrootRelease,
    'file' => __FILE__,
    'document_root' => $_SERVER['DOCUMENT_ROOT'] ?? null,
    'script_filename' => $_SERVER['SCRIPT_FILENAME'] ?? null,
    'script_name' => $_SERVER['SCRIPT_NAME'] ?? null,
    'path_translated' => $_SERVER['PATH_TRANSLATED'] ?? null,
    'path_info' => $_SERVER['PATH_INFO'] ?? null,
    'server_software' => $_SERVER['SERVER_SOFTWARE'] ?? null,
    'include_path' => get_include_path(),
    'open_basedir' => (string) ini_get('open_basedir'),
    'incpath_sapi' => $_SERVER['INCPATH_SAPI'] ?? null,
    'sapi' => PHP_SAPI,
    'pid' => getmypid(),
], JSON_UNESCAPED_SLASHES), "\n";

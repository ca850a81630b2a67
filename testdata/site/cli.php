<?php
// For `incpathd exec` tests; run by the php CLI, not by php-fpm. Prints one
// JSON line with the release of this script, of include/lib_release.php found
// through include_path, and the working directory; then waits for a line on
// stdin (the test flips current meanwhile) and prints a second line with
// include/lib_after.php, also found through include_path, and the working
// directory again. Exits with the status given as the first argument.
function release_of(string $dir): ?string
{
    $s = @file_get_contents($dir . '/release.txt');
    return $s === false ? null : trim($s);
}

function report(string $lib): void
{
    $inc = @include $lib;
    echo json_encode([
        'script' => release_of(__DIR__),
        'include' => is_array($inc) ? $inc['release'] : null,
        'include_file' => is_array($inc) ? $inc['file'] : null,
        'cwd' => getcwd(),
        'pid' => getmypid(),
        'include_path' => get_include_path(),
        'open_basedir' => (string) ini_get('open_basedir'),
        'realpath_cache_size' => (string) ini_get('realpath_cache_size'),
    ], JSON_UNESCAPED_SLASHES), "\n";
}

report('lib_release.php');
fgets(STDIN);
report('lib_after.php');
exit((int) ($argv[1] ?? 0));

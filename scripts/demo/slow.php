<?php
// The request that crosses a flip (scripts/demo.sh): it includes a file,
// sleeps, and includes another. Both files are found through include_path,
// which names <site>/current/lib, so each include resolves `current` at the
// moment it runs. Prints the release of the script and of each include, such
// as "A A B".
//
// ?wait=NAME makes the sleep end when the demo says so rather than after a
// guessed time, which a loaded machine would outlast: after the first
// include the script creates NAME in PHP's temporary directory and sleeps
// until the demo has removed it (having flipped `current` meanwhile), 30 s
// at most. Without ?wait it does not sleep.
$script = basename(__DIR__);
$first = include 'first.php';

$wait = (string) ($_GET['wait'] ?? '');
if ($wait !== '') {
    if (!preg_match('/^\w+$/', $wait)) {
        http_response_code(400);
        exit("?wait= takes a name made of letters, digits and _\n");
    }
    $path = sys_get_temp_dir() . '/' . $wait;
    touch($path);
    for ($i = 0; $i < 3000 && file_exists($path); $i++) {
        usleep(10000);
        clearstatcache(true, $path);
    }
}

$second = include 'second.php';

header('Content-Type: text/plain');
echo "$script $first $second\n";

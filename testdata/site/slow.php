<?php
// Sleeps ?ms=N milliseconds, then prints the release of this script.
usleep(max(0, (int) ($_GET['ms'] ?? 0)) * 1000);

header('Content-Type: text/plain');
echo trim((string) file_get_contents(__DIR__ . '/release.txt')), "\n";

<?php
// Streams ?mb=N MiB (default 1), or exactly ?bytes=N bytes, of a fixed
// pattern in which byte i is i % 251. The body goes out in chunks of 64256
// bytes (256 periods of the pattern), never as one string.
if (isset($_GET['bytes'])) {
    $n = (int) $_GET['bytes'];
} else {
    $n = (int) ($_GET['mb'] ?? 1) * 1048576;
}
$n = max(0, $n);

$period = '';
for ($i = 0; $i < 251; $i++) {
    $period .= chr($i);
}
$chunk = str_repeat($period, 256);
$size = strlen($chunk);

header('Content-Type: application/octet-stream');
header('Content-Length: ' . $n);
while ($n >= $size) {
    echo $chunk;
    $n -= $size;
}
if ($n > 0) {
    echo substr($chunk, 0, $n);
}

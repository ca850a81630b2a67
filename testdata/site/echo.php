<?php
// Hashes the request body while reading it, without holding it in memory,
// and reports {"sha256": hex, "length": bytes read, "content_length": the
// CONTENT_LENGTH param or null, "method": ...}. Send bodies as
// application/octet-stream: PHP consumes form-encoded bodies itself.
$ctx = hash_init('sha256');
$length = 0;
$in = fopen('php://input', 'rb');
if ($in !== false) {
    $length = hash_update_stream($ctx, $in);
    fclose($in);
}

header('Content-Type: application/json');
echo json_encode([
    'sha256' => hash_final($ctx),
    'length' => $length,
    'content_length' => isset($_SERVER['CONTENT_LENGTH']) && $_SERVER['CONTENT_LENGTH'] !== ''
        ? (int) $_SERVER['CONTENT_LENGTH'] : null,
    'method' => $_SERVER['REQUEST_METHOD'] ?? null,
]), "\n";

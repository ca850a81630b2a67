<?php
// Reports the PHP runtime as JSON: whether opcache is loaded and running,
// which ini files were read, and the current value of every setting named in
// ?ini=a,b,c (false for an unknown setting).
$ini = [];
foreach (explode(',', (string) ($_GET['ini'] ?? '')) as $name) {
    if ($name !== '') {
        $ini[$name] = ini_get($name);
    }
}

header('Content-Type: application/json');
echo json_encode([
    'sapi' => PHP_SAPI,
    'version' => PHP_VERSION,
    'pid' => getmypid(),
    'opcache_loaded' => extension_loaded('Zend OPcache'),
    'opcache_status' => function_exists('opcache_get_status') && is_array(@opcache_get_status(false)),
    'loaded_ini' => php_ini_loaded_file(),
    'scanned_ini' => php_ini_scanned_files(),
    'ini' => (object) $ini,
], JSON_UNESCAPED_SLASHES), "\n";

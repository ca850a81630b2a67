<?php
// Reports the request's CGI variables as PHP sees them: the names of every
// $_SERVER entry, sorted, and the value of each name given in ?names=A,B
// (null when unset), in $_SERVER and in the environment (getenv).
$names = [];
foreach (explode(',', (string) ($_GET['names'] ?? '')) as $name) {
    if ($name !== '') {
        $names[$name] = [
            'server' => isset($_SERVER[$name]) ? (string) $_SERVER[$name] : null,
            'getenv' => getenv($name) === false ? null : getenv($name),
        ];
    }
}
$keys = array_keys($_SERVER);
sort($keys);

header('Content-Type: application/json');
echo json_encode(['keys' => $keys, 'names' => (object) $names], JSON_UNESCAPED_SLASHES), "\n";

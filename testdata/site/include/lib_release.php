<?php
// Found only through include_path (it is not next to the scripts that
// include it). Returns the release this copy belongs to and its own path.
return [
    'release' => trim((string) file_get_contents(dirname(__DIR__) . '/release.txt')),
    'file' => __FILE__,
];

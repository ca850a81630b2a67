<?php
// Same as lib_release.php; a second file so that torture.php resolves a
// fresh include_path lookup after its pause.
return [
    'release' => trim((string) file_get_contents(dirname(__DIR__) . '/release.txt')),
    'file' => __FILE__,
];

<?php
// Found through include_path: reports the release it belongs to.
return ['release' => trim(file_get_contents(dirname(__DIR__) . '/release.txt'))];

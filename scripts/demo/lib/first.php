<?php
// The release this copy belongs to: __DIR__ is its resolved path,
// <site>/releases/A/lib.
return basename(dirname(__DIR__));

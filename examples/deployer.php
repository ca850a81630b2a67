<?php
// Deployer (deployer.org, version 7) tasks that switch releases with incpathd
// instead of Deployer's own symlink steps, and drain old releases before
// deleting them. Require this file in deploy.php after the recipe:
//
//     require 'recipe/laravel.php';
//     require __DIR__ . '/incpathd.php';
//
// The tasks keep Deployer's names, so the recipe's deploy flow runs them.
namespace Deployer;

// The incpathd binary on the hosts.
set('bin/incpathd', 'incpathd');

// How long deploy:cleanup waits for requests still running in an old
// release before deleting it. Keep it under Deployer's default_timeout
// (300 s), which bounds every remote command.
set('incpathd_drain_timeout', '4m');

// Set to true where incpathd has no drain command yet, or the daemon no
// --control endpoint: old releases are then deleted without draining.
set('incpathd_skip_drain', false);

// Compile the new release into php-fpm's opcache (through the daemon's
// --control endpoint, INCPATHD_CONTROL on the host) before the flip. The
// daemon evicts drained releases from opcache by itself: no cachetool or
// opcache_reset() task is needed.
set('incpathd_warm', true);

desc('Points current at the new release with incpathd activate');
task('deploy:symlink', function () {
    // {{release_path}} is the real releases/N directory (Deployer reads it
    // from its `release` link). incpathd writes current -> releases/N with
    // one rename and keeps the old target in current.previous; it refuses a
    // current that is a real directory instead of replacing it.
    $warm = get('incpathd_warm') ? ' --warm' : '';
    run('{{bin/incpathd}} activate {{release_path}} --link {{current_path}} --allow-root {{deploy_path}}/releases' . $warm);
    run('cd {{deploy_path}} && rm -f release'); // Deployer's in-progress marker
});

desc('Rolls back to the previous release with incpathd activate');
task('rollback', function () {
    // Deployer's choice of release (it skips those marked BAD_RELEASE),
    // switched to atomically.
    cd('{{deploy_path}}');
    $current = basename(run('readlink {{current_path}}'));
    $candidate = get('rollback_candidate');
    $warm = get('incpathd_warm') ? ' --warm' : '';
    run("{{bin/incpathd}} activate {{deploy_path}}/releases/$candidate --link {{current_path}}" . $warm);
    run('echo ' . escapeshellarg(timestamp() . ',' . get('user')) . " > releases/$current/BAD_RELEASE");
    writeln("rolled back from <info>$current</info> to <info>$candidate</info>");
});

desc('Drains and deletes old releases');
task('deploy:cleanup', function () {
    $releases = get('releases_list'); // newest first
    $keep = (int) get('keep_releases');
    run('cd {{deploy_path}} && if [ -e release ]; then rm release; fi');
    if ($keep <= 0) {
        return; // keep_releases = -1 keeps them all
    }
    // Never the live release or the rollback target, whatever their age.
    $live = run('readlink -f {{current_path}}');
    $previous = run('readlink -e {{current_path}}.previous || true');
    foreach (array_slice($releases, $keep) as $release) {
        $path = run("readlink -f {{deploy_path}}/releases/$release");
        if ($path === $live || $path === $previous) {
            continue;
        }
        if (!get('incpathd_skip_drain')
            && !test("{{bin/incpathd}} drain $path --timeout {{incpathd_drain_timeout}}")) {
            warning("release $release may still be in use; kept for a later cleanup");
            continue;
        }
        run("rm -rf {{deploy_path}}/releases/$release");
    }
});

//! The container engine end to end: `berth` commands against real containers (berth-monitor,
//! berth-oci, runc and crun, CNI plugins), as root, in a temp store root, with the suite's own
//! cgroup parent, bridge and subnet. The suite ends by checking that nothing (containers,
//! mounts, cgroups, processes, bridges, iptables rules) was left behind.
//!
//! Needs the workspace's binaries built (`cargo build --workspace --bins`; `make test` does).

mod build;
mod everyday;
mod hostile;
mod lifecycle;
mod net;
mod options;
mod recovery;
mod support;

use berth_testkit::trials;
use libtest_mimic::Arguments;

fn main() {
    let args = Arguments::from_args();
    berth_testkit::host::require_root("the engine tests run real containers and must run as root");
    berth_testkit::check::watchdog("engine", std::time::Duration::from_secs(20 * 60));
    let tests = trials![
        lifecycle::run_foreground_exit_codes_and_streams,
        lifecycle::foreground_run_forwards_signals,
        lifecycle::detached_lifecycle,
        lifecycle::logs_rotation_follow_since,
        lifecycle::create_start_names_and_ids,
        lifecycle::interactive_stdin_and_terminal,
        lifecycle::terminals_sizes_and_keys,
        lifecycle::attach_to_a_running_container,
        lifecycle::exec_through_the_runtime,
        lifecycle::runtime_handlers,
        lifecycle::top_stats_port_wait,
        lifecycle::restart_policies,
        lifecycle::stop_signal_timeout_and_init,
        options::image_config_is_honoured,
        options::etc_files_and_security_defaults,
        options::read_only_tmpfs_and_volumes,
        options::resources_and_oom,
        options::seccomp_profiles,
        options::cp_both_ways_inside_the_root,
        options::bad_input_fails_clearly_and_leaves_nothing,
        net::published_ports_on_localhost,
        net::published_udp_port_on_localhost,
        net::containers_reach_each_other_on_their_network,
        net::network_none_and_host,
        recovery::cli_killed_at_each_point,
        recovery::rm_killed_midway,
        recovery::foreground_cli_killed_container_goes_on,
        recovery::monitor_killed_under_a_running_container,
        recovery::monitor_killed_at_each_point,
        recovery::concurrent_invocations,
        recovery::system_prune_in_its_own_root,
        hostile::image_volume_keys_are_container_paths_only,
        hostile::process_ids_out_of_range_are_refused,
        hostile::nul_bytes_in_the_environment_are_refused,
        hostile::image_labels_do_not_steer_the_runtime,
        hostile::resources_beyond_the_kernel_are_refused,
        hostile::exec_detached_returns_while_the_process_runs,
        hostile::the_store_is_private_to_root,
        hostile::image_config_fields_are_checked,
        hostile::a_runtime_failing_create_leaves_no_cgroup,
        build::build_runs_every_instruction,
        build::build_multi_stage_cache_and_target,
        build::build_errors_leave_nothing,
        build::built_image_pushes_and_pulls_back,
        build::build_add_unpacks_archives_and_fetches_urls,
        build::build_matches_buildah,
        build::build_mounts_secrets_and_flags,
        build::a_killed_build_is_swept_by_the_next,
        everyday::pause_rename_and_update,
        everyday::diff_commit_export_history_version,
        everyday::events_are_logged_and_followed,
        everyday::health_checks_from_flags_and_images,
    ];
    support::init();
    let conclusion = libtest_mimic::run(&args, tests);
    berth_testkit::leaks::fail_on(&support::check_leaks(), "");
    support::cleanup_suite_dir();
    conclusion.exit();
}

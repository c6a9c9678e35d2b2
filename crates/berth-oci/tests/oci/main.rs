//! berth-oci's integration suite: real containers from the busybox bundle, driven through the
//! runc-compatible command line, as root, in a temp directory. The suite ends by checking that
//! nothing (mounts, cgroups, processes, state) was left behind, with the leak check the other
//! suites share (berth_testkit::leaks).
//!
//! `cargo test --test oci -- FILTER` runs a subset; tools/test-cgroup2.sh runs the cgroup and
//! lifecycle tests inside a pure cgroup v2 guest.

mod cgroups;
mod conformance;
mod defences;
mod endurance;
mod errors;
mod exec;
mod hooks;
mod isolation;
mod lifecycle;
mod rootless;
mod seccomp;
mod support;

use berth_testkit::trials;
use libtest_mimic::{Arguments, Completion, Trial};

use support::Runtime;

/// Where runc or crun (Debian's 1.1.5 and 1.8.1) behave differently from berth-oci on a test,
/// and which is right per the runtime-spec. Those tests are skipped for that runtime, loudly.
const DIFFERENCES: &[(&str, Runtime, &str)] = &[
    (
        "conformance::seccomp_profile_denying_the_runtimes_housekeeping",
        Runtime::Runc,
        "runc 1.1 closes its own descriptors through /proc/self/fd (openat, getdents64) after loading a filter without no_new_privs, so a profile denying them fails create ('error closing exec fds'); the spec's profile confines the container's process, not the runtime's work: berth-oci does that work before the filter",
    ),
    (
        "conformance::seccomp_profile_denying_the_runtimes_housekeeping",
        Runtime::Crun,
        "crun 1.8's exec opens /proc/self/setgroups after loading the filter, so exec fails under a profile denying openat; the spec's profile confines the container's process, not the runtime's work",
    ),
    (
        "conformance::seccomp_enosys_for_syscalls_newer_than_the_profile",
        Runtime::Runc,
        "runc 1.1 has the ENOSYS stub, but fails create under this allowlist before the probe runs (it closes its descriptors through /proc/self/fd after the filter: 'error closing exec fds')",
    ),
    (
        "conformance::seccomp_enosys_for_syscalls_newer_than_the_profile",
        Runtime::Crun,
        "crun 1.8 fails create under an allowlist profile that lists only what the program and the identity switch need ('read from the init process'): its own work after the filter needs more",
    ),
    (
        "conformance::no_mount_namespace",
        Runtime::Runc,
        "runc 1.1 without a mount namespace still bind-mounts the rootfs in the runtime's mount table (left there) and fails ('error closing exec fds: open /proc/self/fd'); the spec has such a container inherit the runtime's namespace, whose table berth-oci leaves untouched",
    ),
    (
        "conformance::no_mount_namespace",
        Runtime::Crun,
        "crun 1.8 without a mount namespace mounts config.json's mounts in the runtime's mount table (left there) instead of refusing them; the spec has the container inherit that namespace, not change it",
    ),
    (
        "conformance::mount_namespace_joined_by_path",
        Runtime::Runc,
        "runc 1.1 sets the rootfs up inside the joined mount namespace and fails ('error preparing rootfs: open /proc/self/mountinfo'); the spec's path MUST place the container in that namespace",
    ),
    (
        "conformance::mount_namespace_joined_by_path",
        Runtime::Crun,
        "crun 1.8 sets the rootfs up inside the joined mount namespace and fails ('chdir(.)'); the spec's path MUST place the container in that namespace",
    ),
    (
        "conformance::rootfs_propagation_unbindable",
        Runtime::Runc,
        "runc 1.1 leaves the container's / without the unbindable propagation rootfsPropagation asks for, which the spec has the runtime set",
    ),
    (
        "conformance::scheduler_flags_by_their_spec_names",
        Runtime::Runc,
        "runc 1.1 (runtime-spec 1.0.2) predates process.scheduler and ignores it",
    ),
    (
        "conformance::scheduler_flags_by_their_spec_names",
        Runtime::Crun,
        "crun 1.8 predates process.scheduler and ignores it",
    ),
    ("conformance::memory_policy", Runtime::Runc, "runc 1.1 predates linux.memoryPolicy and ignores it"),
    ("conformance::memory_policy", Runtime::Crun, "crun 1.8 predates linux.memoryPolicy and ignores it"),
    (
        "conformance::realtime_scheduler_in_a_new_cgroup",
        Runtime::Runc,
        "runc 1.1 predates process.scheduler and ignores it (the process keeps SCHED_OTHER)",
    ),
    (
        "conformance::realtime_scheduler_in_a_new_cgroup",
        Runtime::Crun,
        "crun 1.8 predates process.scheduler and ignores it (the process keeps SCHED_OTHER)",
    ),
    (
        "conformance::hook_state_is_created",
        Runtime::Runc,
        "runc 1.1 gives prestart and createRuntime hooks the status 'creating'; by the spec's lifecycle they run once the create operation's environment is complete: 'created' (crun and the validation suite agree)",
    ),
    (
        "conformance::hostname_sysctls_refused",
        Runtime::Runc,
        "runc 1.1 refuses kernel.hostname but takes kernel.domainname ('no OCI field for it'); runtime-spec 1.2 has a domainname field, which the sysctl fights as kernel.hostname fights hostname",
    ),
    (
        "conformance::hostname_sysctls_refused",
        Runtime::Crun,
        "crun 1.8 refuses kernel.hostname but takes kernel.domainname; runtime-spec 1.2 has a domainname field, which the sysctl fights as kernel.hostname fights hostname",
    ),
    (
        "conformance::poststart_failure_is_a_warning",
        Runtime::Runc,
        "runc 1.1 runs poststart hooks during create and fails it on a failing one; the spec: 'the runtime MUST log a warning, but the remaining hooks and lifecycle continue'",
    ),
    (
        "conformance::home_from_passwd",
        Runtime::Crun,
        "crun 1.8 leaves HOME unset for a uid without a passwd entry; the spec leaves HOME to the caller, berth-oci gives / as runc does",
    ),
    (
        "conformance::processes_lead_their_own_session",
        Runtime::Crun,
        "crun 1.8's exec'd process stays in crun's session; the spec says nothing, berth-oci starts one as runc does",
    ),
    (
        "conformance::hooks_environment",
        Runtime::Crun,
        "crun 1.8 gives createContainer hooks without env the runtime's environment, runc the container process's; the spec says only 'environ semantics', berth-oci follows runc",
    ),
    (
        "conformance::hooked_containers_stress",
        Runtime::Crun,
        "crun 1.8 fails some of these hooked runs by itself ('error executing hook /bin/true (exit code: -33)')",
    ),
];

/// Replaces the trials a peer runtime is known to fail, by design, with a loud skip.
fn mark_differences(tests: Vec<Trial>, runtime: Runtime) -> Vec<Trial> {
    tests
        .into_iter()
        .map(|t| match DIFFERENCES.iter().find(|(name, r, _)| *name == t.name() && *r == runtime) {
            Some((name, _, why)) => {
                let reason = format!("{} differs: {why}", runtime.name());
                Trial::ignorable_test(*name, move || {
                    eprintln!("SKIPPED {name}: {reason}");
                    Ok(Completion::ignored_with(reason))
                })
            }
            None => t,
        })
        .collect()
}

fn main() {
    let args = Arguments::from_args();
    berth_testkit::host::require_root("berth-oci's integration tests run real containers and must run as root");
    // In the cgroup v2 guest (software emulation) the suite takes about 16 minutes; here one.
    berth_testkit::check::watchdog("berth-oci", std::time::Duration::from_secs(45 * 60));
    let tests = trials![
        lifecycle::create_start_state_delete,
        lifecycle::init_waits_for_start,
        lifecycle::run_returns_exit_codes,
        lifecycle::run_never_misses_a_fast_exit,
        lifecycle::start_never_misses_a_fast_exit,
        lifecycle::run_forwards_signals,
        lifecycle::run_detach_and_keep,
        lifecycle::kill_signals_and_all,
        lifecycle::delete_needs_force_while_running,
        lifecycle::pause_and_resume,
        lifecycle::list_table_and_json,
        lifecycle::ps_lists_container_processes,
        lifecycle::events_stats_report_usage,
        lifecycle::events_report_oom,
        lifecycle::update_changes_limits,
        lifecycle::pid_file_and_annotations,
        lifecycle::session_keyring,
        lifecycle::terminal_over_console_socket,
        lifecycle::preserve_fds,
        lifecycle::socket_activation,
        lifecycle::spec_and_features,
        lifecycle::log_json_records_errors,
        lifecycle::no_pivot,
        exec::exec_joins_the_container,
        exec::exec_exit_codes_and_errors,
        exec::exec_user_cwd_env_and_caps,
        exec::exec_detached_with_pid_file,
        exec::exec_process_file_and_terminal,
        exec::exec_in_a_user_namespace,
        exec::exec_forwards_signals,
        isolation::namespaces_are_new,
        isolation::namespaces_joined_by_path,
        isolation::user_namespace_with_mappings,
        isolation::user_namespace_joined_by_path,
        isolation::idmapped_mounts,
        isolation::time_namespace_offsets,
        isolation::hostname_and_domainname,
        isolation::sysctl_in_the_container_namespaces,
        isolation::process_user_and_umask,
        isolation::rlimits,
        isolation::no_new_privileges_and_capabilities,
        isolation::oom_score_adj,
        isolation::process_attributes,
        isolation::root_readonly_and_propagation,
        isolation::shared_mounts_propagate_both_ways,
        isolation::mounts_and_options,
        isolation::tmpcopyup_into_new_and_existing_directories,
        isolation::bind_mounts,
        isolation::cgroup_mount_shows_own_cgroup,
        isolation::default_devices_and_links,
        isolation::spec_devices,
        isolation::ptmx_in_spec_devices_stays_the_pts_link,
        isolation::masked_and_readonly_paths,
        rootless::rootless_lifecycle,
        rootless::rootless_limits_need_a_delegated_cgroup,
        hooks::every_hook_runs_with_its_state,
        hooks::failing_hooks,
        seccomp::actions_and_argument_filters,
        seccomp::default_action_with_errno_and_flags,
        seccomp::exec_gets_the_container_filter,
        seccomp::notify_listener,
        seccomp::bad_profiles_are_refused,
        cgroups::memory,
        cgroups::cpu,
        cgroups::pids_limit_stops_forks,
        cgroups::block_io,
        cgroups::hugepage_limits,
        cgroups::devices_rules,
        cgroups::unified_resources,
        cgroups::relative_cgroups_path,
        cgroups::shared_parent_created_and_removed_concurrently,
        cgroups::cpuset_below_a_parent_not_yet_filled_in,
        errors::malformed_config_names_the_json_path,
        errors::missing_rootfs_and_relative_paths,
        errors::bad_namespaces,
        errors::container_ids,
        errors::unsupported_fields_are_named,
        errors::mount_destination_escaping_the_rootfs,
        errors::failed_creates_leave_nothing,
        errors::host_limits_fail_clearly,
        errors::ids_out_of_range_and_nul_bytes_are_refused,
        defences::cve_2019_5736_runtime_binary_out_of_reach,
        defences::cve_2024_21626_no_leaked_descriptors_and_cwd_inside_root,
        defences::cve_2019_19921_proc_and_sys_only_on_real_directories,
        defences::cve_2021_30465_mount_target_swapped_during_create,
        defences::cve_2025_52881_proc_writes_not_redirected,
        defences::cve_2025_31133_masked_paths_use_the_real_dev_null,
        defences::cve_2025_52565_dev_console_symlink,
        endurance::thousand_lifecycles_leave_nothing,
        conformance::seccomp_profile_denying_the_runtimes_housekeeping,
        conformance::seccomp_enosys_for_syscalls_newer_than_the_profile,
        conformance::kernel_memory_limits_accepted,
        conformance::no_mount_namespace,
        conformance::mount_namespace_joined_by_path,
        conformance::rootfs_propagation_unbindable,
        conformance::bind_mount_with_data_options,
        conformance::memory_policy,
        conformance::scheduler_flags_by_their_spec_names,
        conformance::realtime_scheduler_in_a_new_cgroup,
        conformance::home_from_passwd,
        conformance::processes_lead_their_own_session,
        conformance::hooks_environment,
        conformance::hook_state_is_created,
        conformance::loopback_up_in_a_new_network_namespace,
        conformance::hostname_sysctls_refused,
        conformance::exec_cwd_error_names_the_step,
        conformance::poststart_failure_is_a_warning,
        conformance::hooked_containers_stress,
    ];
    support::init();
    let tests = mark_differences(tests, support::suite().runtime);
    let conclusion = libtest_mimic::run(&args, tests);
    berth_testkit::leaks::fail_on(&support::check_leaks(), "");
    support::cleanup_suite_dir();
    conclusion.exit();
}

//! berth-oci's integration suite: real containers from the busybox bundle, driven through the
//! runc-compatible command line, as root, in a temp directory. The suite ends by checking that
//! nothing (mounts, cgroups, processes, state) was left behind.
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
const DIFFERENCES: &[(&str, Runtime, &str)] = &[];

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
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("berth-oci's integration tests run real containers and must run as root");
        std::process::exit(1);
    }
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
    let leaks = support::check_leaks();
    if leaks.is_empty() {
        support::cleanup_suite_dir();
    } else {
        eprintln!("LEAKS after the suite (it left these behind):");
        for l in &leaks {
            eprintln!("  {l}");
        }
        std::process::exit(1);
    }
    conclusion.exit();
}

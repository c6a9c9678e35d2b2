//! berthd end to end over gRPC: pods and containers on real namespaces, cgroups, CNI and
//! berth-oci, images from a registry on loopback, as root, in a temp store with the suite's own
//! cgroup parent, bridge and subnet. The suite ends by stopping berthd and checking that
//! nothing (containers, pods' reapers, mounts, cgroups, namespaces, bridges, iptables rules)
//! was left behind.
//!
//! Needs the workspace's binaries built (`cargo build --workspace --bins`; `make test` does).

mod config;
mod crictl;
mod hostile;
mod images;
mod lifecycle;
mod metrics;
mod security;
mod streaming;
mod support;
mod userns;

use berth_testkit::trials;
use libtest_mimic::Arguments;

fn main() {
    let args = Arguments::from_args();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the berthd tests run real pods and must run as root");
        std::process::exit(1);
    }
    berth_testkit::check::watchdog("berthd pods", std::time::Duration::from_secs(15 * 60));
    let tests = trials![
        lifecycle::pod_and_container_lifecycle,
        lifecycle::containers_share_the_pods_namespaces,
        lifecycle::pid_namespace_modes,
        lifecycle::pod_on_the_nodes_network,
        lifecycle::events_follow_the_containers,
        lifecycle::stats_and_resource_updates,
        lifecycle::log_reopened_after_rotation,
        lifecycle::many_pods_at_once,
        lifecycle::runtime_handlers_run_the_pods_containers,
        metrics::pod_and_container_metrics,
        metrics::pod_resources_are_recorded,
        images::pull_status_list_remove,
        images::pull_with_credentials,
        hostile::requests_are_refused_naming_the_field,
        hostile::failed_creates_leave_nothing,
        hostile::the_clis_containers_are_not_berthds,
        security::absent_fields_mean_what_the_cri_says,
        security::mount_propagation_and_its_refusals,
        security::privileged_containers_get_the_hosts_devices,
        security::selinux_options_where_the_host_has_no_selinux,
        security::image_volumes,
        crictl::runs_a_pod_end_to_end,
        streaming::exec_over_both_transports,
        streaming::exec_with_a_terminal,
        streaming::concurrent_execs_and_grpc_while_streaming,
        streaming::attach_to_a_containers_stdio,
        streaming::port_forward_over_both_transports,
        streaming::port_forward_on_the_host_network,
        streaming::hostile_streaming_clients,
        config::cri_section_configures_pods,
        userns::pods_with_their_own_user_namespace,
        userns::user_namespace_refusals,
    ];
    // Restarting berthd would fail every test running meanwhile: these run alone, after.
    let alone = trials![
        lifecycle::berthd_restart_keeps_pods,
        lifecycle::berthd_killed_mid_create,
        lifecycle::node_restart_leaves_pods_not_ready,
    ];
    support::init();
    let mut conclusion = libtest_mimic::run(&args, tests);
    let mut one_at_a_time = args.clone();
    one_at_a_time.test_threads = Some(1);
    let after = libtest_mimic::run(&one_at_a_time, alone);
    conclusion.num_passed += after.num_passed;
    conclusion.num_failed += after.num_failed;
    conclusion.num_filtered_out += after.num_filtered_out;
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

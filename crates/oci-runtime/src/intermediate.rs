//! The intermediate process of a two-stage create (see
//! [`NamespacePlan::needs_intermediate`](crate::namespaces::NamespacePlan::needs_intermediate)):
//! cloned by the runtime, it joins the user namespace and the others in order, creates the new
//! ones (asking the runtime for the id maps of a new user namespace), then clones the init as
//! its sibling (CLONE_PARENT), hands the runtime the init's pidfd and exits. The runtime's side
//! is `create`'s `drive_intermediate`.

use std::os::fd::AsFd;

use berth_sys::process::{clone3, prctl, unshare, Forked};
use oci_spec::runtime::LinuxNamespaceType;

use crate::error::{Context, Result};
use crate::init::{self, InitFds, InitPlan, Stage};
use crate::namespaces;
use crate::sync::{ChildEnd, ToChild, ToRuntime};

/// The intermediate's body: never returns. Its child (the init) goes on in [`init::run`].
pub(crate) fn run(plan: &InitPlan, fds: InitFds) -> ! {
    match steps(plan, &fds.sync) {
        Ok(Forked::Child) => init::run(plan, fds, Stage::FromIntermediate),
        Ok(Forked::Parent { pidfd, .. }) => {
            let _ = fds.sync.send_with_fds(&ToRuntime::InitPidfd, &[pidfd.as_fd()]);
            init::exit(0);
        }
        Err(e) => {
            fds.sync.send_error(&e);
            init::exit(1);
        }
    }
}

fn steps(plan: &InitPlan, sync: &ChildEnd) -> Result<Forked> {
    prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as u64).ctx("PR_SET_PDEATHSIG")?;
    // While still the host's root; the init inherits the cgroups when cloned.
    plan.cgroup.join_self(plan.cgroup2_joined_at_clone)?;
    let ns = &plan.namespaces;
    ns.join_late()?;
    if ns.creates(LinuxNamespaceType::User) {
        unshare(libc::CLONE_NEWUSER).ctx("creating the user namespace")?;
        sync.send(&ToRuntime::MapRequest)?;
        sync.expect("MapDone", "berth-oci", |m| matches!(m, ToChild::MapDone))?;
        namespaces::become_namespace_root()?;
    }
    unshare(ns.clone_flags() & !libc::CLONE_NEWUSER).ctx("creating namespaces")?;
    clone3(libc::CLONE_PARENT as u64, None).ctx("creating the container process (clone3)")
}

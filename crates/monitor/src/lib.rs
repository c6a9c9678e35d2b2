//! berth-monitor's library half: the contract between the engine and the monitor
//! (`protocol`), compiled into both.

pub mod protocol;

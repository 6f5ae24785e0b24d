//! The commands for developers and evaluators, built only with the `lab`
//! feature (the default of a source build; the package leaves it out):
//! `zeroth demo`, `zeroth lab` and `zeroth bench`, which start the private
//! lab's real parts (swtpm, SoftHSM, PostgreSQL, MariaDB, sshd) and drive
//! the product against them. Nothing of the product imports them.

pub mod bench;
mod bench_cluster;
mod bench_db;
mod bench_growth;
mod bench_load;
mod bench_proxy;
mod bench_quote;
mod bench_server;
mod bench_soak;
mod bench_ssh;
mod bench_workload;
pub mod demo;
mod demo_backup;
mod demo_cluster;
mod demo_db;
mod demo_proxy;
mod demo_spiffe;
mod demo_ssh;
pub mod lab;

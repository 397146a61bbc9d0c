//! `--policy`, `--isolation native|oci` and `--runtime crun|runc` for commands that start workers.
use caffe_sandbox_policy::oci_tier::{launch_worker, OciRunner, Runtime};
use caffe_sandbox_policy::SandboxPolicy;
use caffe_sandbox_supervisor::{Deadlines, Error, LaunchConfig, Worker};
use clap::{Args, ValueEnum};

/// Isolation tier.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// caffe-sandbox's own layered sandbox (crates/jail + seccomp with a supervisor-side listener).
    #[default]
    Native,
    /// An OCI runtime (crun, runc) running the bundle `caffe-sandbox export oci` generates.
    Oci,
}

/// Policy and tier options.
#[derive(Args, Debug, Clone)]
pub struct IsolationArgs {
    /// Sandbox policy (TOML file or builtin:NAME, see docs/policy.md): its limits, allowed-weaker layers, seccomp
    /// policy and deadlines replace the defaults (explicit --allow-weaker flags are added).
    #[arg(long, value_name = "P")]
    pub policy: Option<String>,
    /// Isolation tier.
    #[arg(long, value_enum, default_value_t = Isolation::Native)]
    pub isolation: Isolation,
    /// OCI runtime for --isolation oci: crun or runc.
    #[arg(long, value_name = "RUNTIME", default_value = "crun")]
    pub runtime: String,
}

/// How workers are started.
pub struct Tier {
    policy: SandboxPolicy,
    oci: Option<OciRunner>,
}

impl IsolationArgs {
    /// Applies the policy (if any) to `cfg` and `deadlines`; returns how to start workers.
    pub fn prepare(
        &self,
        cfg: &mut LaunchConfig,
        deadlines: &mut Deadlines,
    ) -> Result<Tier, Error> {
        let policy = match &self.policy {
            Some(p) => {
                let pol = SandboxPolicy::load_spec(p)
                    .map_err(|e| Error::Setup(format!("policy: {e}")))?;
                let extra = cfg.allow_weaker.clone();
                pol.apply_to(cfg)
                    .map_err(|e| Error::Setup(format!("policy: {e}")))?;
                cfg.allow_weaker.extend(extra);
                *deadlines = pol.supervisor_deadlines();
                pol
            }
            None => SandboxPolicy::inference(),
        };
        let oci = match self.isolation {
            Isolation::Native => None,
            Isolation::Oci => {
                let rt: Runtime = self.runtime.parse().map_err(Error::Setup)?;
                Some(OciRunner::find(rt).map_err(Error::Setup)?)
            }
        };
        Ok(Tier { policy, oci })
    }
}

impl Tier {
    /// Starts one worker in this tier.
    pub fn start(&self, cfg: &LaunchConfig, deadlines: Deadlines) -> Result<Worker, Error> {
        match &self.oci {
            None => Worker::start(cfg, deadlines),
            Some(runner) => {
                let mut policy = self.policy.clone();
                policy.allow_weaker.extend(cfg.allow_weaker.iter().copied());
                Worker::start_launched(cfg, deadlines, launch_worker(cfg, &policy, runner)?)
            }
        }
    }
}

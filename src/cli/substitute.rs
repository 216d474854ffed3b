//! Substituters and trust for `forge build` and `forge show`: flags on top of the config file,
//! and the substitution pass that runs before the executor.

use std::collections::HashSet;
use std::sync::Mutex;

use clap::Args;
use rayon::prelude::*;

use super::{Failure, GlobalArgs, Planned};
use crate::cache::substitute::{self, Offer};
use crate::cache::{remote, Config, PublicKey, Remote, Trust};
use crate::graph::NodeId;
use crate::hash::Digest;
use crate::store::Store;

#[derive(Args, Debug, Clone, Default)]
pub struct SubstituteArgs {
    /// Fetch from this binary cache instead of building when it has a realisation signed by a
    /// trusted key (repeatable; tried before the config's substituters)
    #[arg(long = "substituter", value_name = "URL")]
    substituters: Vec<String>,
    /// Trust realisations signed by this public key, NAME:BASE64 as `forge key generate`
    /// prints it (repeatable; added to the config's trusted-public-keys)
    #[arg(long = "trusted-key", value_name = "KEY")]
    trusted_keys: Vec<String>,
    /// Use no substituter at all, not even the config's
    #[arg(long)]
    no_substitute: bool,
    /// Ask substituters again even about derivations they recently said they lack
    #[arg(long)]
    refresh: bool,
    /// Substitute an output only when at least K distinct trusted keys signed the same out
    /// hash for its derivation (else build locally) [default: the config's require-agreement, or 1]
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    require_agreement: Option<u32>,
}

/// Substituters, trust and policy, resolved from the config and flags.
pub struct Substitution {
    pub remotes: Vec<Box<dyn Remote>>,
    pub trust: Trust,
    pub policy: substitute::Policy,
}

impl SubstituteArgs {
    /// `None` when there is nothing to substitute from (no substituter or no trusted key).
    pub fn resolve(&self, global: &GlobalArgs) -> Result<Option<Substitution>, Failure> {
        if self.no_substitute {
            return Ok(None);
        }
        let config = global.config()?;
        let urls: Vec<&String> = self.substituters.iter().chain(&config.substituters).collect();
        if urls.is_empty() {
            return Ok(None);
        }
        let trust = trust(&self.trusted_keys, &config)?;
        if trust.is_empty() {
            eprintln!("forge: warning: substituters are set but no key is trusted (--trusted-key or trusted-public-keys in the config): nothing will be substituted");
            return Ok(None);
        }
        let remotes = urls.iter().map(|u| remote::open(u, None)).collect::<Result<Vec<_>, _>>().map_err(Failure::usage)?;
        let negative_ttl = if self.refresh { 0 } else { config.negative_ttl() };
        let require_agreement = self.require_agreement.map(|k| k as usize).or(config.require_agreement).unwrap_or(1).max(1);
        if require_agreement > trust.names().count() {
            eprintln!("forge: warning: {require_agreement} keys must agree but only {} are trusted: nothing will be substituted", trust.names().count());
        }
        Ok(Some(Substitution { remotes, trust, policy: substitute::Policy { negative_ttl, require_agreement } }))
    }
}

/// The trusted keys: `--trusted-key` flags, then the config's `trusted-public-keys`.
pub fn trust(flags: &[String], config: &Config) -> Result<Trust, Failure> {
    let keys = flags.iter().chain(&config.trusted_public_keys);
    let keys: Vec<PublicKey> = keys.map(|k| PublicKey::parse(k)).collect::<Result<_, _>>().map_err(Failure::usage)?;
    Ok(Trust::new(keys))
}

impl GlobalArgs {
    /// The config file: `--config`, else the default location (missing is fine there).
    pub fn config(&self) -> Result<Config, Failure> {
        match (&self.config, Config::default_path()) {
            (Some(path), _) => Config::load(path, true).map_err(Failure::usage),
            (None, Some(path)) => Config::load(&path, std::env::var_os("FORGE_CONFIG").is_some()).map_err(Failure::usage),
            (None, None) => Ok(Config::default()),
        }
    }
}

/// Which nodes are not realised locally by drv hash, and what the substituters offer for them.
/// Asks nothing when everything is local.
pub fn offers(store: &Store, planned: &Planned, sub: &Substitution) -> Result<Vec<(NodeId, Offer)>, Failure> {
    let available = crate::executor::realised_by_drv(store, &planned.plan)?;
    offers_for_missing(store, planned, sub, &available)
}

/// What the substituters offer for the nodes not `available` locally.
fn offers_for_missing(store: &Store, planned: &Planned, sub: &Substitution, available: &[bool]) -> Result<Vec<(NodeId, Offer)>, Failure> {
    let missing: Vec<(NodeId, Digest)> =
        planned.plan.drv_hashes.iter().enumerate().filter(|(id, _)| !available[*id]).map(|(id, d)| (id, *d)).collect();
    let wanted: Vec<_> = missing.iter().map(|(_, d)| *d).collect();
    let mut warn = |w: String| eprintln!("forge: warning: {w}");
    let found = substitute::query(store, &sub.remotes, &sub.trust, &wanted, &sub.policy, &mut warn).map_err(Failure::failed)?;
    Ok(missing.into_iter().filter_map(|(id, drv)| found.get(&drv).map(|o| (id, o.clone()))).collect())
}

/// The offers worth fetching: those of nodes the run needs, given that every offered output
/// can be had (so the build-only inputs of offered outputs are not fetched). One query.
pub fn needed_offers(store: &Store, planned: &Planned, sub: &Substitution) -> Result<Vec<(NodeId, Offer)>, Failure> {
    let mut available = crate::executor::realised_by_drv(store, &planned.plan)?;
    let offers = offers_for_missing(store, planned, sub, &available)?;
    for (id, _) in &offers {
        available[*id] = true;
    }
    let needed = planned.graph.needed(&available);
    Ok(offers.into_iter().filter(|(id, _)| needed[*id]).collect())
}

/// Fetch every offer, `jobs` at a time. A failed download is a warning: the node is built
/// locally instead. Returns the nodes substituted.
pub fn fetch_all(store: &Store, sub: &Substitution, offers: &[(NodeId, Offer)], jobs: usize, quiet: bool) -> HashSet<NodeId> {
    if offers.is_empty() {
        return HashSet::new();
    }
    let total: u64 = offers.iter().map(|(_, o)| o.info.archive.size).sum();
    if !quiet {
        eprintln!("substituting {} packages ({} of archives, big files extra)", offers.len(), super::fetch::human_bytes(total));
    }
    let done = Mutex::new(HashSet::new());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs.max(1)).build();
    let run = || {
        offers.par_iter().for_each(|(id, offer)| {
            let remote = &sub.remotes[offer.substituter];
            match substitute::fetch(store, remote.as_ref(), offer) {
                Ok(out) => {
                    if !quiet {
                        eprintln!("substituted {} -> {} from {}", offer.doc.name, out.short(), remote.url());
                    }
                    done.lock().expect("done set").insert(*id);
                }
                Err(e) => eprintln!("forge: warning: cannot substitute {} ({e}); it will be built locally", offer.doc.name),
            }
        })
    };
    match pool {
        Ok(pool) => pool.install(run),
        Err(_) => run(),
    }
    done.into_inner().expect("done set")
}

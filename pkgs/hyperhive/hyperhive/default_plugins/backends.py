"""Built-in deploy backends (``local``, ``nixos-container``) and what the service does with them: at start, give
every agent (the manager included) its repos and the meta flake, start them all, watch for crashes, and run tag
retention daily; at stop, stop the agents."""

from __future__ import annotations

import logging
import os
import threading
import time

from .. import approvals, registry, repos, retention
from ..backends.local import LocalBackend
from ..backends.nixos_container import NixosContainerBackend
from ..hookspecs import hookimpl

log = logging.getLogger(__name__)

RETENTION_INTERVAL = 86400.0


@hookimpl
def deploy_backends(hive):
    return {"local": LocalBackend, "nixos-container": NixosContainerBackend}


def pick_backend(hive):
    factories: dict = {}
    for provided in hive.pm.hook.deploy_backends(hive=hive):
        factories.update(provided or {})
    factory = factories.get(hive.config.backend)
    if factory is None:
        raise RuntimeError(f'no deploy backend "{hive.config.backend}" (known: {", ".join(sorted(factories))})')
    return factory(hive)


def seed_all(hive, backend) -> list[str]:
    """Repos for every agent that has none yet; each new seed is pinned in meta as ``deployed/0``."""
    names = [hive.config.manager] + sorted(hive.agent_configs())
    seeded = []
    repos.clean_work_dir(hive)
    for name in names:
        try:  # one agent whose repos cannot be made must not keep the others from theirs
            sha = repos.seed_agent(hive, name)
        except Exception as e:
            log.error("seeding the repos of %s: %s", name, getattr(e, "message", None) or e)
            hive.extensions.setdefault("seed_errors", {})[name] = str(getattr(e, "message", None) or e)
            continue
        hive.extensions.setdefault("seed_errors", {}).pop(name, None)
        if sha:
            seeded.append((name, sha))
    repos.sync_meta(hive)
    meta = repos.ensure_meta_repo(hive)
    for name, sha in seeded:
        try:
            backend.lock(name)
        except Exception as e:
            log.error("pinning %s in the meta flake: %s", name, e)
            repos.restore_meta_lock(hive)
            continue
        repos.commit_meta(meta, f"deploy {name} deployed/0 {sha[:12]}", allow_empty=True)
    return [n for n, _ in seeded]


def start_all(hive, backend, names=None) -> None:
    """Start the agents (every one by default), except those a kill keeps stopped: these are stopped if they run
    (a NixOS container with autoStart comes up with the host, before the service)."""
    try:
        kept = registry.kept_stopped(hive)
    except Exception:
        log.exception("reading which agents a kill keeps stopped")
        kept = {}
    for name in names if names is not None else [hive.config.manager] + sorted(hive.agent_configs()):
        if name in kept:
            held = kept[name]
            log.warning("%s stays stopped: %s killed it at %s (`hyperhive start %s` runs it again)", name,
                        held["by"], time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(held["at"])), name)
            try:
                if backend.state(name) == "running":
                    backend.stop(name)
            except Exception as e:
                log.error("could not stop %s, which a kill keeps stopped: %s", name, e)
            continue
        try:
            backend.start(name)
        except Exception as e:
            log.error("could not start %s: %s", name, e)
            hive.notify(name, f"{name} could not be started: {e}", event="start_failed", name=name,
                        error=str(e))


def _poll_seconds(backend) -> float:
    try:
        return float(os.environ.get("HYPERHIVE_CRASH_POLL_SECONDS", backend.poll_seconds))
    except ValueError:
        return backend.poll_seconds


def watch_crashes(hive, backend) -> None:
    interval = _poll_seconds(backend)
    while not hive.stopped.wait(interval):
        try:
            for name, detail in backend.crashed():
                log.warning("%s crashed: %s", name, detail)
                hive.notify(name, f"{name} crashed: {detail}", event="crashed", name=name, detail=detail)
                hive.bus.publish("state", {"what": "agent", "name": name, "state": "crashed"})
        except Exception:
            log.exception("crash watcher")


def retention_daily(hive) -> None:
    while not hive.stopped.wait(RETENTION_INTERVAL):
        try:
            result = retention.run_retention(hive)
            log.info("daily retention: kept %d tag(s), dropped %d", len(result["kept"]), len(result["dropped"]))
        except Exception:
            log.exception("daily retention")


@hookimpl
def hive_started(hive):
    try:
        backend = pick_backend(hive)
    except Exception as e:
        log.error("%s", e)
        hive.extensions["backend_error"] = str(e)
        return
    hive.extensions["backend"] = backend
    hive.extensions["agents_note"] = backend.describe()
    with approvals.deploy_lock(hive):
        # First put back what a deploy cut short left behind, so that seeding never commits a half-made lock.
        try:
            approvals.recover_interrupted(hive)
        except Exception:
            log.exception("recovering interrupted deploys")
        try:
            seed_all(hive, backend)
        except Exception:
            log.exception("seeding the config repos")
    if not getattr(hive, "run_agents", True):  # `serve --no-agents`: the test or the operator runs them
        return
    start_all(hive, backend)
    for target, name in ((watch_crashes, "crash-watcher"), (retention_daily, "retention")):
        args = (hive, backend) if target is watch_crashes else (hive,)
        threading.Thread(target=target, args=args, name=name, daemon=True).start()


@hookimpl
def hive_stopping(hive):
    backend = hive.extensions.get("backend")
    if backend is not None:
        approvals.wait_deploys(hive)
        backend.stop_all()


@hookimpl
def config_changed(hive, old, new):
    """Declared agents added to the config start, removed ones stop, changed ones restart on their new policy."""
    backend = hive.extensions.get("backend")
    if backend is None:
        return
    with approvals.deploy_lock(hive):
        added = sorted(set(new.agents) - set(old.agents))
        # A name no longer declared may still be an agent: a spawned one, which now runs on its own policy.
        spawned = hive.spawned_agents(fresh=True)
        removed = sorted(set(old.agents) - set(new.agents) - set(spawned))
        changed = sorted(n for n in set(new.agents) & set(old.agents)
                         if new.agents[n].to_json() != old.agents[n].to_json())
        changed += sorted(n for n in set(old.agents) - set(new.agents)
                          if n in spawned and spawned[n].to_json() != old.agents[n].to_json())
        if new.manager_settings.to_json() != old.manager_settings.to_json():
            changed.append(new.manager)
        for name in removed:
            backend.stop(name)
        try:
            seed_all(hive, backend)
        except Exception:
            log.exception("seeding the config repos")
    if not getattr(hive, "run_agents", True):
        return
    start_all(hive, backend, added)
    for name in changed:
        if backend.state(name) == "running":
            try:
                backend.restart(name)
            except Exception as e:
                log.error("could not restart %s on its new policy: %s", name, e)

"""The commands: deploy a commit, show the status, roll back."""

import argparse
import sys

import deploy_lib
from deploy_lib.compose import ComposeRollout
from deploy_lib.images import Images, ensure_images, git_hash
from deploy_lib.record import read_record, record
from deploy_lib.rollout import Rollout
from deploy_lib.swarm import SwarmRollout
from deploy_lib.target import DeployError, Target, say

# --status: nothing of this project is deployed on the target.
NOTHING_DEPLOYED = 3


def rollout_for(target: Target) -> Rollout:
    return SwarmRollout(target) if target.swarm else ComposeRollout(target)


def deploy(rollout: Rollout, images: Images) -> None:
    target = rollout.target
    for engine in rollout.engines():
        ensure_images(engine, images)
    previous = rollout.current_image()
    try:
        rollout.roll_out(images)
    except DeployError as error:
        record(target, images.app, result="failed", commit=images.commit,
               reason=str(error)[:500], serving=previous or "nothing")  # fmt: skip
        raise
    if previous and previous != images.app:
        target.docker("tag", previous, f"{target.repository}:previous")
    target.docker("tag", images.app, f"{target.repository}:current")
    record(target, images.app, result="succeeded", commit=images.commit, serving=images.app)
    say(f"{images.app} serves {target.name}")


def status(rollout: Rollout) -> int:
    target = rollout.target
    say(f"{target.name}: project {target.project} on {target.engine}")
    last = read_record(target)
    deployed, serving = rollout.show()
    if not deployed and not last:
        say(f"nothing deployed: no {target.project} app and no deploy record on the target")
        return NOTHING_DEPLOYED
    if last:
        print(f"  last deploy: {last.get('result')} {last.get('commit')} at {last.get('time')}")
        if last.get("result") == "failed":
            print(f"  reason: {last.get('reason')}")
            print(f"  serving: {last.get('serving')}")
    return 0 if serving else 1


def main(argv: list[str]) -> int:
    summary = (deploy_lib.__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="scripts/deploy", description=summary)
    parser.add_argument("environment", help="deploy/ENV.env, or a path to an env file")
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--status", action="store_true", help="show what serves and the last deploy"
    )
    action.add_argument("--rollback", action="store_true", help="roll back to the previous image")
    parser.add_argument("--commit", default="HEAD", help="the revision to deploy (default HEAD)")
    args = parser.parse_args(argv)
    try:
        target = Target.load(args.environment)
        rollout = rollout_for(target)
        for engine in rollout.engines():
            engine.reach()
        if args.status:
            return status(rollout)
        if args.rollback:
            previous = f"{target.repository}:previous"
            if not target.has_image(previous):
                raise DeployError(f"no previous image ({previous}) on the target")
            deploy(rollout, Images.of(target, target.commit_of(previous)))
            return 0
        deploy(rollout, Images.of(target, git_hash(f"{args.commit}^{{commit}}")))
        return 0
    except DeployError as error:
        print(f"[deploy] failed: {error}", file=sys.stderr)
        return 1

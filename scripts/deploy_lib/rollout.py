"""How a release replaces the running one: the interface that compose and Swarm implement."""

from abc import ABC, abstractmethod

from deploy_lib.images import Images
from deploy_lib.target import Target


class Rollout(ABC):
    def __init__(self, target: Target) -> None:
        self.target = target

    def engines(self) -> list[Target]:
        """Every engine that needs the images (and is reached before anything changes)."""
        return [self.target]

    @abstractmethod
    def roll_out(self, images: Images) -> None:
        """Serve `images` in place of what runs, or raise DeployError with what runs intact."""

    @abstractmethod
    def current_image(self) -> str | None:
        """The app image that serves (None: nothing, or more than one version)."""

    @abstractmethod
    def show(self) -> tuple[bool, bool]:
        """Prints what runs: (the project is deployed on the target, a healthy app serves)."""

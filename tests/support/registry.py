"""A registry double for controller tests: records promotions, tags and dropped aliases."""

from __future__ import annotations


class Registry:
    def __init__(self, champion="1", versions=("1", "2", "3")):
        self.champion_version, self.versions = champion, set(versions)
        self.promoted, self.tags, self.dropped = [], {}, []

    def champion(self, name):
        return (self.champion_version, None)

    def load_version(self, name, version):
        return (version, None) if str(version) in self.versions else None

    def promote(self, name, version, alias="champion", force=False):
        self.promoted.append((name, str(version)))
        self.champion_version = str(version)

    def tag_version(self, name, version, tags):
        self.tags[str(version)] = tags

    def drop_alias(self, name, alias, version):
        self.dropped.append((alias, str(version)))

"""Install collections from the ``ansible`` PyPI package without installing the package.

    install_bundled_collections.py REQUIREMENTS CACHE-DIR COLLECTION...

REQUIREMENTS names one pinned ``ansible`` release. Its wheel is downloaded (once, into
CACHE-DIR) and only the named collections are unpacked into the running Python's
site-packages, where ansible-core finds them. This gives an environment an older
collection release than the one the current ``ansible`` package bundles, without Galaxy
and without the package's ansible-core requirement.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile


def pinned_requirement(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        lines = [line.split("#", 1)[0].strip() for line in handle]
    pins = [line for line in lines if line]
    if len(pins) != 1 or "==" not in pins[0]:
        raise SystemExit(f"install_bundled_collections: {path} must hold exactly one 'name==version' line")
    return pins[0]


def download(requirement: str, cache: str) -> str:
    name, version = (part.strip() for part in requirement.split("==", 1))
    wheel = os.path.join(cache, f"{name}-{version}-py3-none-any.whl")
    if not os.path.isfile(wheel):
        os.makedirs(cache, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", cache, requirement],
            check=True,
        )
    if not os.path.isfile(wheel):
        raise SystemExit(f"install_bundled_collections: pip did not leave {wheel}")
    return wheel


def unpack(wheel: str, collection: str, site_packages: str) -> None:
    prefix = "ansible_collections/" + collection.replace(".", "/") + "/"
    target = os.path.join(site_packages, *prefix.split("/"))
    if os.path.isdir(target):
        shutil.rmtree(target)
    with zipfile.ZipFile(wheel) as archive:
        members = [member for member in archive.namelist() if member.startswith(prefix)]
        if not members:
            raise SystemExit(f"install_bundled_collections: {os.path.basename(wheel)} does not bundle {collection}")
        archive.extractall(site_packages, members)


def main() -> int:
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    requirements, cache, collections = sys.argv[1], sys.argv[2], sys.argv[3:]
    wheel = download(pinned_requirement(requirements), cache)
    site_packages = sysconfig.get_paths()["purelib"]
    for collection in collections:
        unpack(wheel, collection, site_packages)
    return 0


if __name__ == "__main__":
    sys.exit(main())

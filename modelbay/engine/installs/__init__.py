"""Installs, one pipeline: pre-flight (`installs`), file selection (`files`), verified transfer (`transfer`),
the content-addressed model store (`store`) and the one definition of an installed, loadable version (`loadable`)."""

from modelbay.engine.installs.installs import InstallTicket, Installs
from modelbay.engine.installs.files import check_listing, select_files
from modelbay.engine.installs.store import ModelStore, git_blob_sha1, sha256_file
from modelbay.engine.installs.loadable import Inspection, check_folder, inspect

__all__ = [
    "check_folder", "check_listing", "git_blob_sha1", "inspect", "Inspection", "Installs",
    "InstallTicket", "ModelStore", "select_files", "sha256_file", 
]

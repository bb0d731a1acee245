"""The static leaderboard site (`evalkit site`): builder, Jinja2 templates and vendored static files.

Templates live in `templates/`, CSS/JS in `static/`; both ship inside the package, so a wheel
install can build the site with no network and the site itself loads nothing from outside.
"""

from __future__ import annotations

from evalkit.publishing.site.builder import SiteOptions, SiteResult, build_site

__all__ = ["SiteOptions", "SiteResult", "build_site"]

"""The hands-on's own source server: WordPress on Apache, PHP and MariaDB, all from Debian (root only).

`install_wordpress` turns a debootstrap tree that holds Debian's ``wordpress``, ``apache2``,
``libapache2-mod-php`` and ``mariadb-server`` into a site answering on port 80 at ``/``: Apache's default
site serves ``/usr/share/wordpress``; ``/etc/wordpress/config-default.php`` (Debian's per-host config
scheme, used for any host name) names the database; the database and its user are created and WordPress is
installed (``wp_install``, run by php-cli) in the chroot at build time, so the server's first boot already
serves the site. The administrator's password is random per built tree and kept in `ADMIN_PASSWORD_FILE`
(root only) in the image, where the demo reads it over ssh.

`publish_post` publishes a post through WordPress itself (XML-RPC ``wp.newPost``), as an author would.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
import xmlrpc.client
from pathlib import Path

from rehost.conversion.blockdev import chroot
from rehost.errors import RehostError

ADMIN_USER = "admin"
#: In the image: the WordPress administrator's password (0600, root's).
ADMIN_PASSWORD_FILE = "/root/wordpress-admin-password"
DB_NAME = DB_USER = "wordpress"

_APACHE_SITE = """<VirtualHost *:80>
    DocumentRoot /usr/share/wordpress
    DirectoryIndex index.php index.html
    Alias /wp-content /var/lib/wordpress/wp-content
    <Directory /usr/share/wordpress>
        Options FollowSymLinks
        AllowOverride Limit Options FileInfo
        Require all granted
    </Directory>
    <Directory /var/lib/wordpress/wp-content>
        Options FollowSymLinks
        Require all granted
    </Directory>
    ErrorLog ${APACHE_LOG_DIR}/error.log
    CustomLog ${APACHE_LOG_DIR}/access.log combined
</VirtualHost>
"""

# The site answers under whatever address reaches it (the source's, then each instance's forwarded port),
# as a server moved behind a new IP must: home and site URL follow the request's Host header.
_CONFIG = """<?php
/* rehost's WordPress source server: one site for any host name (Debian's config-default.php). */
define('DB_NAME', '{db}');
define('DB_USER', '{db}');
define('DB_PASSWORD', '{db_password}');
define('DB_HOST', 'localhost');
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
{salts}
$table_prefix = 'wp_';
$rehost_host = isset($_SERVER['HTTP_HOST']) ? preg_replace('/[^a-zA-Z0-9.:\\[\\]-]/', '', $_SERVER['HTTP_HOST']) : 'localhost';
define('WP_HOME', 'http://' . $rehost_host);
define('WP_SITEURL', 'http://' . $rehost_host);
/* No cron spawned by page views: its loopback request would go to the outside address. */
define('DISABLE_WP_CRON', true);
define('WP_CONTENT_DIR', '/var/lib/wordpress/wp-content');
"""

_INSTALL_PHP = """<?php
$_SERVER['HTTP_HOST'] = 'localhost';
define('WP_INSTALLING', true);
require '/usr/share/wordpress/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
$r = wp_install($argv[1], '{user}', 'admin@example.invalid', true, '', $argv[2]);
if (empty($r['user_id'])) {{ fwrite(STDERR, "wp_install failed\\n"); exit(1); }}
update_option('permalink_structure', '');
echo "installed\\n";
"""


class WordPressError(RehostError):
    """WordPress could not be installed in the image or did not take a post."""


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def stop_tree_processes(tree: Path) -> list[int]:
    """Kill every process whose root directory is ``tree`` (a daemon a package's postinst started in the
    debootstrap chroot); return their pids."""
    killed = []
    real = os.path.realpath(tree)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "root") != real:
                continue
            os.kill(int(entry.name), signal.SIGKILL)
            killed.append(int(entry.name))
        except OSError:
            continue
    return killed


def install_wordpress(tree: Path, site_title: str) -> None:
    """Configure Apache, MariaDB and WordPress in ``tree`` (chroot mounts in place) and install the site."""
    stop_tree_processes(tree)
    _write(tree / "etc/apache2/sites-available/000-default.conf", _APACHE_SITE)
    db_password = secrets.token_urlsafe(18)
    salts = "\n".join(f"define('{k}', '{secrets.token_urlsafe(48)}');" for k in (
        "AUTH_KEY", "SECURE_AUTH_KEY", "LOGGED_IN_KEY", "NONCE_KEY", "AUTH_SALT", "SECURE_AUTH_SALT",
        "LOGGED_IN_SALT", "NONCE_SALT"))
    config = tree / "etc/wordpress/config-default.php"
    _write(config, _CONFIG.format(db=DB_NAME, db_password=db_password, salts=salts), 0o640)
    os.chown(config, 0, _gid(tree, "www-data"))
    # Debian's theme package installs under /usr/share/wordpress; WP_CONTENT_DIR is /var/lib/wordpress.
    themes = tree / "var/lib/wordpress/wp-content/themes"
    for theme in (tree / "usr/share/wordpress/wp-content/themes").glob("*"):
        link = themes / theme.name
        if not link.exists() and not link.is_symlink():
            link.symlink_to(f"/usr/share/wordpress/wp-content/themes/{theme.name}")
    admin_password = secrets.token_urlsafe(18)
    _write(tree / ADMIN_PASSWORD_FILE.lstrip("/"), admin_password + "\n", 0o600)
    _write(tree / "root/wp-install.php", _INSTALL_PHP.format(user=ADMIN_USER), 0o600)
    if not (tree / "var/lib/mysql/mysql").is_dir():
        chroot(tree, ["mariadb-install-db", "--user=mysql", "--skip-test-db"], timeout=600)
    with _mariadb(tree):
        chroot(tree, ["mariadb", "-e",
                      f"CREATE DATABASE IF NOT EXISTS {DB_NAME} CHARACTER SET utf8mb4; "
                      f"CREATE USER IF NOT EXISTS '{DB_USER}'@'localhost' IDENTIFIED BY '{db_password}'; "
                      f"GRANT ALL PRIVILEGES ON {DB_NAME}.* TO '{DB_USER}'@'localhost'; FLUSH PRIVILEGES;"])
        out = chroot(tree, ["php", "/root/wp-install.php", site_title, admin_password], timeout=600)
        if "installed" not in out:
            raise WordPressError(f"wp_install did not finish: {out[-500:]}")
    (tree / "root/wp-install.php").unlink()


def _gid(tree: Path, group: str) -> int:
    return _id_in(tree / "etc/group", group)


def _uid(tree: Path, user: str) -> int:
    return _id_in(tree / "etc/passwd", user)


def _id_in(db: Path, wanted: str) -> int:
    """The numeric ID of ``wanted`` in a passwd or group file."""
    for line in db.read_text().splitlines():
        name, _, num, *_ = line.split(":")
        if name == wanted:
            return int(num)
    raise WordPressError(f"no {wanted} in {db}")


class _mariadb:
    """MariaDB running in the chroot for the duration of a ``with`` block, shut down cleanly after it."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _mariadb:
        run_dir = self.tree / "run/mysqld"
        run_dir.mkdir(parents=True, exist_ok=True)
        os.chown(run_dir, _uid(self.tree, "mysql"), _gid(self.tree, "mysql"))
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
        self.log = self.tree / "root/mariadb-build.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["chroot", str(self.tree), "/usr/sbin/mariadbd", "--user=mysql",
                                          "--skip-networking"], stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 120
        while not (run_dir / "mysqld.sock").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise WordPressError(f"MariaDB did not start in the chroot: {self.log.read_text()[-800:]}")
            time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        try:
            chroot(self.tree, ["mariadb-admin", "shutdown"], timeout=120)
            self.proc.wait(120)
        except Exception:
            self.proc.kill()
            self.proc.wait(30)
            raise
        finally:
            self.log.unlink(missing_ok=True)


def publish_post(site_url: str, password: str, title: str, content: str, user: str = ADMIN_USER) -> int:
    """Publish a post through the site's XML-RPC endpoint (``wp.newPost``); return its ID."""
    proxy = xmlrpc.client.ServerProxy(site_url.rstrip("/") + "/xmlrpc.php")
    try:
        post_id = proxy.wp.newPost(0, user, password, {"post_title": title, "post_content": content,
                                                       "post_status": "publish"})
    except (xmlrpc.client.Fault, xmlrpc.client.ProtocolError, OSError) as exc:
        raise WordPressError(f"wp.newPost on {site_url} failed: {exc}") from exc
    return int(str(post_id))

"""Shared page pieces: current_user() (local picker or OIDC sign-in), the sidebar (user, dataset, model pickers)
and the worker banner."""
from __future__ import annotations

import streamlit as st

from pages.parts.plain import md_escape  # noqa: F401  (re-exported for pages written before parts.plain)

from pages.parts import state
from services.models.catalog import list_datasets, list_models
from services.models.independent import INDEPENDENT_SUFFIX
from services.team.serving import bind_refusal
from services.team.users import get_or_create_user, get_user, list_users, signin_configured
from services.jobs.worker import alive_workers

WORKER_CMD = ".venv/bin/exemplar worker"


LOCAL_MODE = "local mode — no sign-in"


def signin_mode() -> bool:
    """Sign-in mode when Streamlit's secrets (.streamlit/secrets.toml, or the files named by --secrets.files)
    configure an OpenID Connect provider under [auth]."""
    try:
        if st.secrets.load_if_toml_exists() and "auth" in st.secrets:
            auth = st.secrets["auth"]
            return bool(auth.get("redirect_uri") and auth.get("cookie_secret"))
    except Exception:  # unreadable secrets: fall back to the file check the CLI uses
        pass
    return signin_configured()


def refuse_open_bind() -> None:
    """Serve nothing but a one-line refusal on a non-loopback address without sign-in, whichever way Streamlit
    was started (services/team/serving.py). app.py and every page call it: a deep link opened first after a plain
    `streamlit run app.py` runs its page alone, before app.py has navigated once."""
    from streamlit import runtime

    if not runtime.exists() or signin_mode():
        return
    why = bind_refusal(st.get_option("server.address"))
    if why:
        st.error(why)
        st.stop()


def _signed_in_user() -> dict | None:
    """The signed-in identity (provider e-mail, else subject) as a user row, created on first sign-in."""
    info = st.user
    if not info.get("is_logged_in"):
        return None
    email = info.get("email")
    name = str(email or info.get("sub") or "").strip()
    if not name:
        return None
    cached = st.session_state.get("user")
    if cached and cached.get("name") == name:
        return cached
    uid = get_or_create_user(name, email=email, signed_in=True)  # a new identity is a reader, however the
    st.session_state["user"] = {"id": uid, "name": name}        # secrets were given (--secrets.files too)
    return st.session_state["user"]


def current_user() -> dict | None:
    """The one identity helper: {'id', 'name', 'role'} of the signed-in user (sign-in mode) or of the user
    picked in the sidebar (local mode), or None. The role is read from the database on every call."""
    u = _signed_in_user() if signin_mode() else st.session_state.get("user")
    if u is None:
        return None
    row = get_user(u["id"])
    return None if row is None else {"id": row["id"], "name": row["name"], "role": row["role"]}


def require_user() -> dict | None:
    u = current_user()
    if u is None:
        st.info("Pick or create a user name in the sidebar first: every write records who made it.")
    return u


def selected_dataset() -> dict | None:
    return st.session_state.get("dataset")


def selected_model() -> dict | None:
    return st.session_state.get("model")


def _create_user() -> None:
    """Create-user callback (runs before the script, so it may set the picker's state)."""
    new = (st.session_state.get("sb_new_user") or "").strip()
    if not new and current_user() is not None:
        return  # an empty submit after Enter already created the user
    try:
        uid = get_or_create_user(new)
    except ValueError as exc:
        st.session_state["sb_user_error"] = str(exc)
        return
    st.session_state["user"] = {"id": uid, "name": new}
    st.session_state["sb_user"] = new
    st.session_state["sb_new_user"] = ""


def identity_panel() -> None:
    """Sign-in mode: who is signed in (plain text), role, sign out. Local mode: the labelled user picker."""
    if signin_mode():
        u = current_user()
        if u is None:
            st.button("Sign in", key="sb_login", on_click=st.login, type="primary")
            return
        st.text(f"Signed in as {u['name']} ({u['role']})")
        st.button("Sign out", key="sb_logout", on_click=st.logout)
        return
    st.caption(LOCAL_MODE)
    _local_picker()
    u = current_user()
    if u is not None:
        st.text(f"role: {u['role']}")


def sidebar(pickers: bool = True) -> None:
    with st.sidebar:
        st.markdown("### Exemplar")
        if not signin_mode():  # local mode only: a signed-in identity never comes from the URL
            state.restore_identity(list_users())  # issue 16: user / dataset / model survive a reload (URL query params)
        identity_panel()
        if pickers:
            _pickers()
        state.save_identity()


def _switch_user() -> None:
    """The user picker's callback: it runs before the script, so app.py builds the new user's navigation at once."""
    pick = st.session_state.get("sb_user")
    row = next((u for u in list_users() if u["name"] == pick), None)
    if row is not None:
        st.session_state["user"] = {"id": row["id"], "name": row["name"]}


def _local_picker() -> None:
    users = list_users()
    names = [u["name"] for u in users]
    cur = current_user()
    idx = names.index(cur["name"]) if cur and cur["name"] in names else None
    pick = st.selectbox("User", names, index=idx, key="sb_user", placeholder="pick a user", on_change=_switch_user)
    with st.form("sb_user_form", border=False, enter_to_submit=True):  # Enter or one click creates the user
        st.text_input("…or create a user", key="sb_new_user", placeholder="your name")
        st.form_submit_button("Create user", key="sb_create_user", on_click=_create_user)
    if st.session_state.get("sb_user_error"):
        st.error(st.session_state.pop("sb_user_error"))
    if pick and (cur is None or cur["name"] != pick):
        st.session_state["user"] = next({"id": u["id"], "name": u["name"]} for u in users if u["name"] == pick)


def _pickers() -> None:
    datasets = list_datasets()
    if not datasets:
        st.caption("No dataset yet: build the demo with `exemplar demo` or import one on **Data & models**.")
        st.session_state["dataset"] = None
    else:
        dnames = [d["name"] for d in datasets]
        cur_d = selected_dataset()
        di = dnames.index(cur_d["name"]) if cur_d and cur_d["name"] in dnames else 0
        dn = st.selectbox("Dataset", dnames, index=di, key="sb_dataset")
        st.session_state["dataset"] = next(d for d in datasets if d["name"] == dn)
    ds = selected_dataset()
    models = list_models("classifier", ds["id"]) if ds else []
    if not models:
        st.caption("No classifier for this dataset yet: train one on **Data & models**.")
        st.session_state["model"] = None
    else:
        labels = [model_label(m) for m in models]
        cur_m = selected_model()
        ids = [m["id"] for m in models]
        mi = ids.index(cur_m["id"]) if cur_m and cur_m["id"] in ids else default_model_index(models)
        ml = st.selectbox("Model", labels, index=mi, key="sb_model")
        st.session_state["model"] = models[labels.index(ml)]
    worker_banner()


def _opens_first(m: dict) -> bool:
    """Not B, not a control, and of a retrain's seeds only the first one's child (the one its result names)."""
    cfg = m.get("config") or {}
    if m["name"].endswith(INDEPENDENT_SUFFIX) or cfg.get("control_of"):
        return False
    first = ((cfg.get("xbl") or {}).get("finetune") or {}).get("seed")
    return cfg.get("retrain_id") is None or cfg.get("seed") == first


def default_model_index(models: list[dict]) -> int:
    """The newest classifier that has an explanation run (the gallery opens on its maps, never empty) and is not an
    independent classifier B (the demo trains one last for the cross-model check) nor a retrain's control (a
    retrain registers its seeds' plain and random-pair controls after the child; of its seeds' children, the first
    seed's, the one the retrain's result names); else the newest such model without a run; else the newest."""
    own = [i for i, m in enumerate(models) if _opens_first(m)]
    explained = [i for i in own if models[i].get("has_run", True)]
    return explained[-1] if explained else (own[-1] if own else len(models) - 1)


CONTROL_WORDS = {"control": "plain control", "random_control": "random-pair control"}  # config_schema.ROLES


def model_label(m: dict) -> str:
    """'#7 demo-baseline-exbl_cf-control-s0 · plain control of #6': a control or a retrained child says its lineage."""
    cfg = m.get("config") or {}
    label = f"#{m['id']} {m['name']}"
    if cfg.get("control_of"):
        return f"{label} · {CONTROL_WORDS.get(cfg.get('role'), 'control')} of #{cfg['control_of']}"
    if m.get("parent_id") and cfg.get("retrain_id") is not None:
        return f"{label} · retrained from #{m['parent_id']}"
    return label


def worker_banner() -> None:
    alive = alive_workers()
    if alive:
        st.success(f"Worker alive: {len(alive)} ({', '.join(w['device'] or 'auto' for w in alive)})", icon="✅")
    else:
        st.warning(f"No worker is running: jobs will wait in the queue. Start one with `{WORKER_CMD}` "
                   "(or `make run`).", icon="⚠️")

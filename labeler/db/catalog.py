"""The catalog: subject models, SAEs and their features' statistics."""

from __future__ import annotations

import logging
from typing import Any, Iterable

import sqlalchemy as sa

from labeler.core.errors import InputError
from labeler.core.naming import slugify
from labeler.db.database import Database
from labeler.db.identity import identity_of, name_identity
from labeler.db.keys import float_or_none, iso, json_safe
from labeler.db.models import Feature, Sae, SubjectModel, utcnow
from labeler.db.neighbours import Neighbours
from labeler.db.views import ModelView, SaeView

log = logging.getLogger(__name__)

T_MODEL = SubjectModel.__table__
T_SAE = Sae.__table__
T_FEATURE = Feature.__table__

FULL_STATS_MAX_FEATURES = 65_536  # above this, registering reads only the store's summary arrays


def sae_select(*, count_labeled: bool = False) -> sa.Select:
    """SAE rows with their model's slug and name; with ``count_labeled``, also how many features
    have a label (a scan of the SAE's features: 0.3 s at a million, so lists only)."""
    q = (sa.select(T_SAE, T_MODEL.c.slug.label("model_slug"), T_MODEL.c.name.label("model_name"))
         .join(T_MODEL, T_MODEL.c.id == T_SAE.c.model_id))
    if not count_labeled:
        return q
    labeled = (sa.select(T_FEATURE.c.sae_id, sa.func.count().label("n"))
               .where(T_FEATURE.c.label_explanation_id.is_not(None)).group_by(T_FEATURE.c.sae_id).subquery())
    return (q.add_columns(sa.func.coalesce(labeled.c.n, 0).label("n_labeled"))
            .outerjoin(labeled, labeled.c.sae_id == T_SAE.c.id))


def sae_view(r: Any) -> SaeView:
    return SaeView(id=r["id"], model=r["model_slug"], model_name=r["model_name"], sae=r["slug"], name=r["name"],
                   hook=r["hook"], format=r["format"], n_features=r["n_features"], store_path=r["store_path"],
                   created_at=iso(r["created_at"]), n_labeled=r.get("n_labeled"))


class Catalog:
    def __init__(self, db: Database):
        self.db = db

    # --- writes -------------------------------------------------------------------------------

    def ensure_model(self, c: sa.Connection, name: str, path_or_id: str | None = None) -> int:
        slug = slugify(name)
        c.execute(self.db.insert(T_MODEL).values(slug=slug, name=name, path_or_id=path_or_id, created_at=utcnow())
                  .on_conflict_do_nothing(index_elements=["slug"]))
        return c.execute(sa.select(T_MODEL.c.id).where(T_MODEL.c.slug == slug)).scalar_one()

    def ensure_sae(self, model_name: str, sae_name: str, *, identity: str | None = None, n_features: int = 0,
                   hook: str | None = None, format: str | None = None, store_path: str | None = None,
                   manifest: dict | None = None, model_path_or_id: str | None = None) -> int:
        """Create or update the SAE row of ``identity`` (and its model); returns the SAE id.

        The row is found by identity (default: the names' own, for SAEs known only by name).
        A new identity whose name's slug is taken by another gets ``<slug>-<identity[:8]>``,
        with a warning naming both; an existing row keeps its slug and takes the new values."""
        identity = identity or name_identity(model_name, sae_name)
        values = dict(name=sae_name, hook=hook, format=format, n_features=int(n_features), store_path=store_path,
                      manifest=json_safe(manifest) if manifest is not None else None)
        for attempt in range(4):  # a racing registration can take the slug, then the suffixed slug, first
            try:
                with self.db.engine.begin() as c:
                    model_id = self.ensure_model(c, model_name, model_path_or_id)
                    found = c.execute(sa.select(T_SAE.c.id).where(T_SAE.c.model_id == model_id,
                                                                  T_SAE.c.identity == identity)).scalar_one_or_none()
                    if found is not None:
                        c.execute(T_SAE.update().where(T_SAE.c.id == found).values(**values))
                        return found
                    slug = self._free_slug(c, model_id, sae_name, identity)
                    return c.execute(T_SAE.insert().values(model_id=model_id, identity=identity, slug=slug,
                                                           created_at=utcnow(), **values)
                                     .returning(T_SAE.c.id)).scalar_one()
            except sa.exc.IntegrityError:
                if attempt == 3:
                    raise
        raise AssertionError("unreachable")

    def _free_slug(self, c: sa.Connection, model_id: int, sae_name: str, identity: str) -> str:
        """The name's slug, or (taken by another identity) the slug with the identity's first
        hex digits: stable for this identity, so its pages keep their address."""
        slug = slugify(sae_name)
        holder = self._slug_holder(c, model_id, slug)
        if holder is None:
            return slug
        for digits in (8, 16, len(identity)):  # longer only if someone already holds the shorter one
            own = f"{slug}-{identity[:digits]}"
            if self._slug_holder(c, model_id, own) is None:
                break
        log.warning("SAE name %r is already used by a different SAE (identity %s); this one (identity %s) "
                    "is registered as %r", sae_name, holder, identity, own)
        return own

    @staticmethod
    def _slug_holder(c: sa.Connection, model_id: int, slug: str) -> str | None:
        return c.execute(sa.select(T_SAE.c.identity).where(T_SAE.c.model_id == model_id, T_SAE.c.slug == slug)
                         ).scalar_one_or_none()

    def register_store(self, store: Any, *, full_stats: bool | None = None, batch_size: int = 5000) -> int:
        """Upsert the subject model, the SAE and one row per feature with its statistics.

        ``full_stats``: also read every feature record for the full statistics (histogram,
        mean over firing tokens); default: only for stores of at most FULL_STATS_MAX_FEATURES
        features, since it reads the whole store.  Idempotent: re-registering updates."""
        manifest = dict(store.manifest)
        model_m = manifest.get("model", {}) or {}
        sae_m = manifest.get("sae", {}) or {}
        n = int(store.n_features)
        sae_id = self.ensure_sae(
            store.model_name, store.sae_name, identity=self.store_identity(store), n_features=n,
            hook=model_m.get("hook"),
            format=sae_m.get("format"), store_path=str(store.path), manifest=manifest,
            model_path_or_id=model_m.get("path_or_id"),
        )
        arrays = {k: list(v) for k, v in store.all_stats().items()}
        for k, v in arrays.items():
            if len(v) != n:
                raise InputError(f"store statistics {k!r} have {len(v)} entries but the SAE has {n} features")
        if full_stats is None:
            full_stats = n <= FULL_STATS_MAX_FEATURES
        records: dict[int, dict] = {}
        if full_stats:
            for rec in store.features(range(n)):
                records[rec.feature] = rec.stats.to_dict()

        def row(i: int) -> dict[str, Any]:
            stats = {k: json_safe(v[i]) for k, v in arrays.items()}
            stats.update(json_safe(records.get(i, {})))
            count = stats.get("count")
            return dict(sae_id=sae_id, index=i, count=int(count) if count is not None else None,
                        density=float_or_none(stats.get("density")), max=float_or_none(stats.get("max")),
                        mean=float_or_none(stats.get("mean")), stats=stats)

        self._upsert_features((row(i) for i in range(n)), batch_size)
        Neighbours(self.db).import_store(sae_id, store)
        return sae_id

    def _upsert_features(self, rows: Iterable[dict], batch_size: int) -> None:
        stmt = self.db.insert(T_FEATURE)
        stmt = stmt.on_conflict_do_update(
            index_elements=["sae_id", "index"],
            set_={k: stmt.excluded[k] for k in ("count", "density", "max", "mean", "stats")},
        )
        batch: list[dict] = []
        for r in rows:
            batch.append(r)
            if len(batch) >= batch_size:
                with self.db.engine.begin() as c:
                    c.execute(stmt, batch)
                batch = []
        if batch:
            with self.db.engine.begin() as c:
                c.execute(stmt, batch)

    @staticmethod
    def store_identity(store: Any) -> str:
        found = identity_of(store.manifest, str(store.path))
        if found.derived:
            log.warning("store %s has no content identity (collected before labeler wrote one): it is known by "
                        "its settings and path (identity %s); moved elsewhere it registers as another SAE",
                        store.path, found.value)
        return found.value

    def sae_id_for_store(self, store: Any) -> int:
        """The SAE id of the store's identity, registering the store on first use (idempotent;
        a store found at another path has its path updated)."""
        identity = identity_of(store.manifest, str(store.path)).value  # registering says if derived
        with self.db.read_engine.connect() as c:
            row = c.execute(sa.select(T_SAE.c.id, T_SAE.c.store_path).join(T_MODEL, T_MODEL.c.id == T_SAE.c.model_id)
                            .where(T_MODEL.c.slug == slugify(store.model_name), T_SAE.c.identity == identity)
                            ).first()
        if row is None:
            return self.register_store(store)
        if row.store_path != str(store.path):
            with self.db.engine.begin() as c:
                c.execute(T_SAE.update().where(T_SAE.c.id == row.id).values(store_path=str(store.path)))
        return row.id

    # --- reads ----------------------------------------------------------------------------------

    def sae_id_for(self, model_slug: str, sae_slug: str) -> int | None:
        with self.db.read_engine.connect() as c:
            return c.execute(
                sa.select(T_SAE.c.id).join(T_MODEL, T_MODEL.c.id == T_SAE.c.model_id)
                .where(T_MODEL.c.slug == model_slug, T_SAE.c.slug == sae_slug)
            ).scalar_one_or_none()

    def sae(self, sae_id: int) -> SaeView | None:
        with self.db.read_engine.connect() as c:
            r = c.execute(sae_select().where(T_SAE.c.id == sae_id)).mappings().first()
        return sae_view(r) if r else None

    def list_models(self, limit: int = 100, offset: int = 0) -> list[ModelView]:
        with self.db.read_engine.connect() as c:
            rows = c.execute(
                sa.select(T_MODEL.c.slug, T_MODEL.c.name, T_MODEL.c.path_or_id,
                          sa.func.count(T_SAE.c.id).label("n_saes"))
                .outerjoin(T_SAE, T_SAE.c.model_id == T_MODEL.c.id)
                .group_by(T_MODEL.c.id).order_by(T_MODEL.c.slug).limit(limit).offset(offset)
            ).mappings().all()
        return [ModelView(model=r["slug"], name=r["name"], path_or_id=r["path_or_id"], n_saes=r["n_saes"])
                for r in rows]

    def list_saes(self, model_slug: str | None = None, limit: int = 100, offset: int = 0) -> list[SaeView]:
        q = sae_select(count_labeled=True).order_by(T_MODEL.c.slug, T_SAE.c.slug).limit(limit).offset(offset)
        if model_slug is not None:
            q = q.where(T_MODEL.c.slug == model_slug)
        with self.db.read_engine.connect() as c:
            return [sae_view(r) for r in c.execute(q).mappings().all()]

    def model_exists(self, model_slug: str) -> bool:
        with self.db.read_engine.connect() as c:
            return c.execute(sa.select(T_MODEL.c.id).where(T_MODEL.c.slug == model_slug)).first() is not None

    def resolve_sae(self, spec: str | int) -> SaeView:
        """An SAE by id, ``model/sae`` slugs or a unique SAE slug; InputError naming the known ones."""
        spec_s = str(spec).strip()
        q = sae_select()
        if spec_s.isdigit():
            q = q.where(T_SAE.c.id == int(spec_s))
        elif "/" in spec_s:
            model, _, sae = spec_s.rpartition("/")
            q = q.where(T_MODEL.c.slug == slugify(model), T_SAE.c.slug == slugify(sae))
        else:
            q = q.where(T_SAE.c.slug == slugify(spec_s))
        with self.db.read_engine.connect() as c:
            hits = [sae_view(r) for r in c.execute(q.limit(2)).mappings().all()]
        if len(hits) == 1:
            return hits[0]
        known = ", ".join(f"{s.model}/{s.sae} (id {s.id})" for s in self.list_saes(limit=50))
        known = known or "none (run `labeler label` first)"
        if not hits:
            raise InputError(f"no SAE {spec_s!r} in the database; known SAEs: {known}")
        raise InputError(f"SAE slug {spec_s!r} is ambiguous; use model/sae: {known}")

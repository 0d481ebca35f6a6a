"""Several processes writing the same and different keys at once: no duplicates, no errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import sqlalchemy as sa

WRITER = textwrap.dedent('''
    import sys
    from labeler.db import Repository
    from labeler.records import Explanation, LLMUsage, ScoreResult

    url, worker, sae_id, job_id, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    repo = Repository(url)
    for f in range(n):
        for explainer in ("shared", f"own-{worker}"):
            e = Explanation(feature=f, text=f"{explainer} text {f}", explainer=explainer, llm_model="m",
                            usage=LLMUsage(calls=1, prompt_tokens=10))
            eid = repo.results.save_explanation(sae_id, e, job_id=job_id)
            repo.results.save_score(eid, ScoreResult(feature=f, method="simulation", value=worker / 10,
                                                     llm_model="m"))
            repo.results.save_score(eid, ScoreResult(feature=f, method="simulation", value=0.0, control=True,
                                                     llm_model="m"))
        repo.jobs.mark_feature(job_id, f, "done", usage=LLMUsage(calls=2, prompt_tokens=20))
    print("ok", worker)
''')


def test_concurrent_writers(database_url, tmp_path):
    from labeler.db import Repository

    repo = Repository(database_url)
    repo.db.upgrade()
    n_workers, n_features = 4, 15
    sae_id = repo.catalog.ensure_sae("model", "sae", n_features=n_features)
    job_id = repo.jobs.create(sae_id, {}, list(range(n_features)))
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), database_url, str(w), str(sae_id), str(job_id),
                               str(n_features)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(n_workers)]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        assert out.startswith("ok")

    with repo.db.engine.connect() as c:
        n_exp = c.execute(sa.text("SELECT count(*) FROM explanation")).scalar_one()
        n_shared = c.execute(sa.text("SELECT count(*) FROM explanation WHERE explainer = 'shared'")).scalar_one()
        n_score = c.execute(sa.text("SELECT count(*) FROM score")).scalar_one()
        dup = c.execute(sa.text("SELECT count(*) FROM (SELECT sae_id, feature_index, key FROM explanation "
                                "GROUP BY sae_id, feature_index, key HAVING count(*) > 1) d")).scalar_one()
        n_usage = c.execute(sa.text("SELECT count(*) FROM llm_usage")).scalar_one()
    assert n_shared == n_features
    assert n_exp == n_features * (1 + n_workers)
    assert n_score == 2 * n_exp  # one real and one control score per explanation
    assert dup == 0
    assert n_usage == n_exp  # usage recorded once per stored explanation, never per retry
    info = repo.jobs.info(job_id)
    assert info.counts == {"pending": 0, "done": n_features, "failed": 0, "reused": 0}
    assert info.tokens["prompt"] == 20 * n_features  # set, not summed over duplicate reports
    # every feature's label is the best non-control simulation score among all writers
    for f in range(n_features):
        label = repo.reads.feature(sae_id, f).label
        assert label.method == "simulation"
        assert label.score == max(w / 10 for w in range(n_workers))
    repo.close()

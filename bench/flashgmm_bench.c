/*
 * flashgmm_bench - recall against speed and build time for gmmivf and its alternatives.
 *
 * For one data set in texmex form (DIR/base.fvecs, query.fvecs, groundtruth.ivecs) it
 *   1. loads the base vectors into a table with COPY (text) and reports the load rate;
 *   2. builds each index under test, reporting the build time per phase (polled from
 *      pg_stat_progress_create_index on a second connection) and the index size;
 *   3. runs the queries single-client (latency p50/p99, recall@10, distances computed per query
 *      from flashgmm_last_scan()) and with several clients (QPS) over a grid of probes;
 *   4. writes results.md (markdown), results.tsv and, when gnuplot is there, recall_qps.png and
 *      recall_distances.png into --out.
 *
 * Methods (--methods, comma separated; default all):
 *   gmmivf            gmmivf with its defaults (and lists = --lists)
 *   gmmivf-hard       max_assign = 1: a plain k-means-style IVF, the ablation of soft assignment
 *   gmmivf-diag       covariance = 'diag'
 *   gmmivf-posterior  the default index, lists ranked by the query's posterior
 *                     (SET flashgmm.probe_order = posterior)
 *   exact             sequential scan (no index)
 *   ivfflat, hnsw     pgvector (lists = --lists; m = 16, ef_construction = 64, ef_search grid)
 *                     when the "vector" extension is available, skipped with a message otherwise
 * --variant NAME:OPTIONS adds a gmmivf index built WITH (lists = L, OPTIONS), e.g.
 *   --variant gmmivf-t2:temperature=2
 *
 * Recall@10 is tie-aware: a returned id counts when its exact L2 distance to the query (computed
 * here in double from the fvecs) is at most the 10th true neighbour's (1e-6 relative slack), so
 * rows at the same distance as the 10th neighbour are not counted as misses.  groundtruth.ivecs is
 * exact L2; for unit-normalised data (cosine sets) L2 order is cosine order.
 *
 * Connection: libpq environment (PGHOST, PGPORT, PGUSER); --db names the database (created when
 * missing).  --quick: sift-10k-sized smoke test; prints "N passed, N failed" checks that the
 * program works and recall is sane (never a time).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define MAXM 32
#define MAXP 64
#define MAXPH 16
#define K 10

/* ------------------------------------------------------------------ utils */
static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void
die(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	fprintf(stderr, "flashgmm_bench: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static char *
xstrdup(const char *s)
{
	char	   *r = strdup(s);

	if (!r)
		die("out of memory");
	return r;
}

static void *
xmalloc(size_t n)
{
	void	   *p = malloc(n ? n : 1);

	if (!p)
		die("out of memory (%zu bytes)", n);
	return p;
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return x < y ? -1 : x > y;
}

static double
percentile(double *v, int n, double p)
{
	double	   *c = xmalloc(sizeof(double) * n);
	double		r;
	int			i;

	memcpy(c, v, sizeof(double) * n);
	qsort(c, n, sizeof(double), cmp_double);
	i = (int) ceil(p * n) - 1;
	if (i < 0)
		i = 0;
	if (i >= n)
		i = n - 1;
	r = c[i];
	free(c);
	return r;
}

/* reads a whole .fvecs/.ivecs file: n rows of d 4-byte values */
static void *
read_vecs(const char *path, int *n, int *d, int max_rows)
{
	FILE	   *f = fopen(path, "rb");
	struct stat st;
	int32_t		dim;
	long		rows;
	char	   *buf;

	if (!f)
		die("cannot open %s: %s", path, strerror(errno));
	if (fread(&dim, 4, 1, f) != 1 || dim <= 0)
		die("%s: bad header", path);
	fstat(fileno(f), &st);
	rows = st.st_size / (4L * (dim + 1));
	if (max_rows > 0 && rows > max_rows)
		rows = max_rows;
	buf = xmalloc((size_t) rows * dim * 4);
	rewind(f);
	for (long i = 0; i < rows; i++)
	{
		int32_t		dd;

		if (fread(&dd, 4, 1, f) != 1 || dd != dim ||
			fread(buf + (size_t) i * dim * 4, 4, dim, f) != (size_t) dim)
			die("%s: row %ld is bad", path, i);
	}
	fclose(f);
	*n = (int) rows;
	*d = dim;
	return buf;
}

static void
append_vec(char **buf, size_t *len, size_t *cap, const float *v, int d, char open, char close)
{
	if (*cap - *len < (size_t) d * 18 + 8)
	{
		*cap = (*cap + d * 18 + 8) * 2;
		*buf = realloc(*buf, *cap);
		if (!*buf)
			die("out of memory");
	}
	(*buf)[(*len)++] = open;
	for (int i = 0; i < d; i++)
		*len += sprintf(*buf + *len, i ? ",%.9g" : "%.9g", (double) v[i]);
	(*buf)[(*len)++] = close;
	(*buf)[*len] = 0;
}

static char *
vec_text(const float *v, int d, char open, char close)
{
	char	   *b = NULL;
	size_t		len = 0,
				cap = 0;

	append_vec(&b, &len, &cap, v, d, open, close);
	return b;
}

/* ------------------------------------------------------------------ db */
static PGconn *
connect_db(const char *db)
{
	const char *keys[] = {"dbname", "application_name", NULL};
	const char *vals[] = {db, "flashgmm_bench", NULL};
	PGconn	   *c = PQconnectdbParams(keys, vals, 1);

	if (PQstatus(c) != CONNECTION_OK)
		die("connection to database \"%s\" failed: %s", db, PQerrorMessage(c));
	return c;
}

/* runs a command; returns 0 on success, prints the error unless quiet */
static int
exec_ok(PGconn *c, const char *sql, int quiet)
{
	PGresult   *r = PQexec(c, sql);
	int			ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

	if (!ok && !quiet)
		fprintf(stderr, "SQL failed: %s\n  %s", sql, PQerrorMessage(c));
	PQclear(r);
	return ok ? 0 : -1;
}

static void
exec_must(PGconn *c, const char *sql)
{
	if (exec_ok(c, sql, 0) != 0)
		die("cannot go on");
}

/* first column of the first row, malloc'd; NULL when none or on error */
static char *
query_value(PGconn *c, const char *sql)
{
	PGresult   *r = PQexec(c, sql);
	char	   *v = NULL;

	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
		v = xstrdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

/* ------------------------------------------------------------------ config */
typedef enum
{
	K_GMMIVF, K_EXACT, K_IVFFLAT, K_HNSW
} Kind;

typedef struct
{
	char		name[64];
	Kind		kind;
	char		with[320];		/* reloptions */
	char		session[256];	/* extra SET commands */
	int			shares_index;	/* uses the index of the method before it */
} Method;

typedef struct
{
	char		phase[96];
	double		seconds;
} Phase;

typedef struct
{
	char		method[64];
	char		index_def[512];
	double		seconds;
	int			nphases;
	Phase		phases[MAXPH];
	long long	size_bytes;
	char		info[1024];
	int			ok;
	char		error[256];
} BuildResult;

typedef struct
{
	char		method[64];
	char		param_name[16];
	int			param;
	double		recall,
				strict_recall,
				qps1,
				qpsN,
				p50,
				p99,
				mean_ms,
				dist,
				lists,
				dups;
	int			have_counters;
} QueryResult;

static struct
{
	const char *data;
	const char *name;
	const char *db;
	const char *out;
	const char *metric;			/* l2 | cosine | ip */
	int			lists;
	int			probes[MAXP],
				nprobes;
	int			efs[MAXP],
				nefs;
	int			clients;
	int			nq;
	int			exact_nq;
	int			max_base;
	int			quick;
	int			reuse;
	char		methods[1024];
	char		variants[8][320];
	int			nvariants;
} opt;

static float *base,
		   *queries;
static int	nbase,
			dim,
			nquery,
			gtk;
static int *gt;
static char **qtext_arr,
		  **qtext_vec;
static char table[96];

static BuildResult builds[MAXM];
static int	nbuilds;
static QueryResult results[MAXM * MAXP];
static int	nresults;

static int
parse_list(const char *s, int *out)
{
	int			n = 0;
	char	   *c = xstrdup(s),
			   *save = NULL;

	for (char *t = strtok_r(c, ",", &save); t && n < MAXP; t = strtok_r(NULL, ",", &save))
		out[n++] = atoi(t);
	free(c);
	return n;
}

static int
want(const char *m)
{
	char		buf[1100];

	snprintf(buf, sizeof buf, ",%s,", opt.methods);
	{
		char		pat[80];

		snprintf(pat, sizeof pat, ",%s,", m);
		return strstr(buf, pat) != NULL || strcmp(opt.methods, "all") == 0;
	}
}

/* ------------------------------------------------------------------ recall */
static double
l2sq(const float *a, const float *b)
{
	double		s = 0;

	for (int i = 0; i < dim; i++)
	{
		double		d = (double) a[i] - b[i];

		s += d * d;
	}
	return s;
}

/* tie-aware hits and strict id hits of one query's result */
static void
score(int q, const int *ids, int n, int *hits, int *strict)
{
	const float *qv = queries + (size_t) q * dim;
	const int  *g = gt + (size_t) q * gtk;
	double		kth = l2sq(qv, base + (size_t) g[K - 1] * dim);

	*hits = *strict = 0;
	for (int i = 0; i < n && i < K; i++)
	{
		if (ids[i] < 0 || ids[i] >= nbase)
			continue;
		if (l2sq(qv, base + (size_t) ids[i] * dim) <= kth * (1 + 1e-6) + 1e-12)
			(*hits)++;
		for (int j = 0; j < K; j++)
			if (g[j] == ids[i])
			{
				(*strict)++;
				break;
			}
	}
}

/* ------------------------------------------------------------------ queries */
typedef struct
{
	const Method *m;
	int			param;
	int			tid,
				nthreads;
	int			nq;
	double		elapsed;
	int			errors;
} Worker;

/*
 * The method's query into sql (caller's buffer: the client threads prepare it
 * concurrently; a shared static buffer let one thread send a half-rewritten
 * string: "insufficient data left in message" in CI)
 */
static const char *
query_sql(const Method *m, char *sql, size_t n)
{
	const char *op = strcmp(opt.metric, "cosine") == 0 ? "<=>" : strcmp(opt.metric, "ip") == 0 ? "<#>" : "<->";

	if (m->kind == K_IVFFLAT || m->kind == K_HNSW)
		snprintf(sql, n, "SELECT id FROM %s_pgv ORDER BY v %s $1::vector LIMIT %d", table, op, K);
	else
		snprintf(sql, n, "SELECT id FROM %s ORDER BY v %s $1::real[] LIMIT %d", table, op, K);
	return sql;
}

static void
session_setup(PGconn *c, const Method *m, int param)
{
	char		sql[512];

	exec_must(c, "SET max_parallel_workers_per_gather = 0");
	exec_ok(c, "SET jit = off", 1);
	if (m->kind == K_EXACT)
	{
		exec_must(c, "SET enable_indexscan = off");
		exec_must(c, "SET enable_bitmapscan = off");
	}
	else
		exec_must(c, "SET enable_seqscan = off");
	if (m->kind == K_GMMIVF)
	{
		snprintf(sql, sizeof sql, "SET flashgmm.probes = %d", param);
		exec_must(c, sql);
	}
	else if (m->kind == K_IVFFLAT)
	{
		snprintf(sql, sizeof sql, "SET ivfflat.probes = %d", param);
		exec_must(c, sql);
	}
	else if (m->kind == K_HNSW)
	{
		snprintf(sql, sizeof sql, "SET hnsw.ef_search = %d", param);
		exec_must(c, sql);
	}
	if (m->session[0])
		exec_must(c, m->session);
	{
		char		q[512];
		PGresult   *r = PQprepare(c, "q2", query_sql(m, q, sizeof q), 1, NULL);

		if (PQresultStatus(r) != PGRES_COMMAND_OK)
			die("prepare failed (%s): %s", q, PQerrorMessage(c));
		PQclear(r);
	}
}

static void *
worker_main(void *arg)
{
	Worker	   *w = arg;
	PGconn	   *c = connect_db(opt.db);
	double		t0;
	int			kind_vec = w->m->kind == K_IVFFLAT || w->m->kind == K_HNSW;

	session_setup(c, w->m, w->param);
	t0 = now();
	for (int q = w->tid; q < w->nq; q += w->nthreads)
	{
		const char *p = kind_vec ? qtext_vec[q] : qtext_arr[q];
		PGresult   *r = PQexecPrepared(c, "q2", 1, &p, NULL, NULL, 0);

		if (PQresultStatus(r) != PGRES_TUPLES_OK)
			w->errors++;
		PQclear(r);
	}
	w->elapsed = now() - t0;
	PQfinish(c);
	return NULL;
}

/* runs one configuration: single client with latency, recall and counters; then C clients */
static void
run_config(const Method *m, int param, int have_counters)
{
	PGconn	   *c = connect_db(opt.db);
	int			nq = m->kind == K_EXACT ? opt.exact_nq : opt.nq;
	double	   *lat = xmalloc(sizeof(double) * nq);
	long long	hits = 0,
				strict = 0;
	double		dsum = 0,
				lsum = 0,
				dupsum = 0,
				tsum = 0;
	int			kind_vec = m->kind == K_IVFFLAT || m->kind == K_HNSW;
	int			ncount = 0;
	QueryResult *res = &results[nresults];
	PGresult   *r;

	if (nq > nquery)
		nq = nquery;
	session_setup(c, m, param);
	/* warm-up: a tenth of the queries, untimed */
	for (int q = 0; q < nq / 10; q++)
	{
		const char *p = kind_vec ? qtext_vec[q] : qtext_arr[q];

		r = PQexecPrepared(c, "q2", 1, &p, NULL, NULL, 0);
		PQclear(r);
	}
	for (int q = 0; q < nq; q++)
	{
		const char *p = kind_vec ? qtext_vec[q] : qtext_arr[q];
		int			ids[K],
					n,
					h,
					s;
		double		t0 = now();

		r = PQexecPrepared(c, "q2", 1, &p, NULL, NULL, 0);
		lat[q] = (now() - t0) * 1000.0;
		tsum += lat[q];
		if (PQresultStatus(r) != PGRES_TUPLES_OK)
			die("query failed (%s, %d): %s", m->name, param, PQerrorMessage(c));
		n = PQntuples(r);
		for (int i = 0; i < n && i < K; i++)
			ids[i] = atoi(PQgetvalue(r, i, 0));
		PQclear(r);
		score(q, ids, n, &h, &s);
		hits += h;
		strict += s;
		if (have_counters && m->kind == K_GMMIVF)
		{
			r = PQexec(c, "SELECT distances, lists_probed, duplicates_skipped FROM flashgmm_last_scan()");
			if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
			{
				dsum += atof(PQgetvalue(r, 0, 0));
				lsum += atof(PQgetvalue(r, 0, 1));
				dupsum += atof(PQgetvalue(r, 0, 2));
				ncount++;
			}
			PQclear(r);
		}
	}
	PQfinish(c);

	memset(res, 0, sizeof *res);
	snprintf(res->method, sizeof res->method, "%s", m->name);
	snprintf(res->param_name, sizeof res->param_name, "%s",
			 m->kind == K_HNSW ? "ef_search" : m->kind == K_EXACT ? "-" : "probes");
	res->param = param;
	res->recall = hits / (10.0 * nq);
	res->strict_recall = strict / (10.0 * nq);
	res->p50 = percentile(lat, nq, 0.50);
	res->p99 = percentile(lat, nq, 0.99);
	res->mean_ms = tsum / nq;
	res->qps1 = nq / (tsum / 1000.0);
	if (m->kind == K_EXACT)
	{
		res->dist = nbase;
		res->have_counters = 1;
	}
	else if (ncount > 0)
	{
		res->dist = dsum / ncount;
		res->lists = lsum / ncount;
		res->dups = dupsum / ncount;
		res->have_counters = 1;
	}
	free(lat);

	/* several clients: QPS over the same queries */
	if (opt.clients > 1)
	{
		pthread_t	th[256];
		Worker		w[256];
		double		t0 = now(),
					el;
		int			nc = opt.clients > 256 ? 256 : opt.clients;

		for (int i = 0; i < nc; i++)
		{
			w[i] = (Worker)
			{
				.m = m,.param = param,.tid = i,.nthreads = nc,.nq = nq
			};
			pthread_create(&th[i], NULL, worker_main, &w[i]);
		}
		for (int i = 0; i < nc; i++)
			pthread_join(th[i], NULL);
		el = now() - t0;
		/* connection setup is inside el; use the slowest worker's query loop instead */
		el = 0;
		for (int i = 0; i < nc; i++)
			if (w[i].elapsed > el)
				el = w[i].elapsed;
		res->qpsN = el > 0 ? nq / el : 0;
	}
	nresults++;
	fprintf(stderr, "  %-18s %-9s %5d  recall@10 %.4f  QPS %8.1f (x%d: %8.1f)  p50 %7.3f ms  p99 %7.3f ms",
			m->name, res->param_name, param, res->recall, res->qps1, opt.clients, res->qpsN,
			res->p50, res->p99);
	if (res->have_counters)
		fprintf(stderr, "  dist/q %.0f  lists %.1f  dup-skips %.1f\n", res->dist, res->lists, res->dups);
	else
		fprintf(stderr, "  dist/q n/a\n");
}

/* ------------------------------------------------------------------ load */
static void
load_base(PGconn *c)
{
	char		sql[512];
	char	   *cnt;
	char	   *buf = NULL;
	size_t		len = 0,
				cap = 0;
	double		t0;
	PGresult   *r;

	snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
	cnt = query_value(c, sql);
	if (opt.reuse && cnt && atoi(cnt) == nbase)
	{
		fprintf(stderr, "reusing table %s (%d rows)\n", table, nbase);
		free(cnt);
		return;
	}
	free(cnt);
	snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s, %s_pgv", table, table);
	exec_must(c, sql);
	snprintf(sql, sizeof sql, "CREATE TABLE %s (id int PRIMARY KEY, v real[] NOT NULL)", table);
	exec_must(c, sql);
	t0 = now();
	snprintf(sql, sizeof sql, "COPY %s (id, v) FROM STDIN", table);
	r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_COPY_IN)
		die("COPY failed: %s", PQerrorMessage(c));
	PQclear(r);
	for (int i = 0; i < nbase; i++)
	{
		char		idb[16];
		int			l = sprintf(idb, "%d\t", i);

		if (cap - len < (size_t) l + 1)
		{
			cap = cap * 2 + 64;
			buf = realloc(buf, cap);
		}
		memcpy(buf + len, idb, l);
		len += l;
		append_vec(&buf, &len, &cap, base + (size_t) i * dim, dim, '{', '}');
		buf[len++] = '\n';
		if (len > (1 << 20) || i == nbase - 1)
		{
			if (PQputCopyData(c, buf, (int) len) != 1)
				die("COPY data: %s", PQerrorMessage(c));
			len = 0;
		}
	}
	if (PQputCopyEnd(c, NULL) != 1)
		die("COPY end: %s", PQerrorMessage(c));
	r = PQgetResult(c);
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		die("COPY: %s", PQerrorMessage(c));
	PQclear(r);
	while ((r = PQgetResult(c)) != NULL)
		PQclear(r);
	{
		double		el = now() - t0;

		fprintf(stderr, "loaded %d x %d vectors with COPY in %.2f s: %.0f rows/s, %.1f MB/s of float data\n",
				nbase, dim, el, nbase / el, nbase * (double) dim * 4 / el / 1e6);
		snprintf(builds[nbuilds].method, sizeof builds[0].method, "(COPY load)");
		snprintf(builds[nbuilds].index_def, sizeof builds[0].index_def,
				 "COPY %d rows: %.0f rows/s", nbase, nbase / el);
		builds[nbuilds].seconds = el;
		builds[nbuilds].ok = 1;
		nbuilds++;
	}
	free(buf);
	snprintf(sql, sizeof sql, "VACUUM ANALYZE %s", table);
	exec_must(c, sql);
}

/* ------------------------------------------------------------------ build */
static void
drop_indexes(PGconn *c)
{
	char		sql[512];

	snprintf(sql, sizeof sql,
			 "SELECT string_agg(format('DROP INDEX %%I', indexrelid::regclass::text), '; ') FROM pg_index "
			 "WHERE indrelid IN ('%s'::regclass, coalesce(to_regclass('%s_pgv'), 0)) AND NOT indisprimary",
			 table, table);
	{
		char	   *d = query_value(c, sql);

		if (d)
			exec_must(c, d);
		free(d);
	}
}

/* CREATE INDEX on c while c2 polls pg_stat_progress_create_index */
static BuildResult *
build_index(PGconn *c, PGconn *c2, const Method *m)
{
	BuildResult *b = &builds[nbuilds++];
	char		sql[1024],
				poll[256];
	const char *ops = strcmp(opt.metric, "cosine") == 0 ? "cosine" : strcmp(opt.metric, "ip") == 0 ? "ip" : "l2";
	double		t0,
				tphase;
	char		cur[96] = "";
	PGresult   *r;

	memset(b, 0, sizeof *b);
	snprintf(b->method, sizeof b->method, "%s", m->name);
	drop_indexes(c);
	if (m->kind == K_GMMIVF)
		snprintf(sql, sizeof sql, "CREATE INDEX bench_idx ON %s USING gmmivf (v float4_%s_ops) WITH (%s)",
				 table, ops, m->with);
	else if (m->kind == K_IVFFLAT)
		snprintf(sql, sizeof sql, "CREATE INDEX bench_idx ON %s_pgv USING ivfflat (v vector_%s_ops) WITH (%s)",
				 table, ops, m->with);
	else
		snprintf(sql, sizeof sql, "CREATE INDEX bench_idx ON %s_pgv USING hnsw (v vector_%s_ops) WITH (%s)",
				 table, ops, m->with);
	snprintf(b->index_def, sizeof b->index_def, "%s", strstr(sql, "USING") ? strstr(sql, "USING") : sql);
	fprintf(stderr, "building %s: %s\n", m->name, sql);
	snprintf(poll, sizeof poll,
			 "SELECT phase, tuples_done, tuples_total FROM pg_stat_progress_create_index WHERE pid = %d",
			 PQbackendPID(c));
	exec_ok(c, "SET max_parallel_maintenance_workers = 0", 1);
	t0 = tphase = now();
	if (!PQsendQuery(c, sql))
		die("send: %s", PQerrorMessage(c));
	for (;;)
	{
		if (!PQconsumeInput(c))
			die("build: %s", PQerrorMessage(c));
		if (!PQisBusy(c))
			break;
		r = PQexec(c2, poll);
		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		{
			const char *ph = PQgetvalue(r, 0, 0);

			if (strcmp(ph, cur) != 0)
			{
				double		t = now();

				if (cur[0] && b->nphases < MAXPH)
				{
					snprintf(b->phases[b->nphases].phase, sizeof b->phases[0].phase, "%s", cur);
					b->phases[b->nphases++].seconds = t - tphase;
				}
				snprintf(cur, sizeof cur, "%s", ph);
				tphase = t;
			}
		}
		PQclear(r);
		usleep(20000);
	}
	b->seconds = now() - t0;
	if (cur[0] && b->nphases < MAXPH)
	{
		snprintf(b->phases[b->nphases].phase, sizeof b->phases[0].phase, "%s", cur);
		b->phases[b->nphases++].seconds = now() - tphase;
	}
	b->ok = 1;
	while ((r = PQgetResult(c)) != NULL)
	{
		if (PQresultStatus(r) != PGRES_COMMAND_OK)
		{
			b->ok = 0;
			snprintf(b->error, sizeof b->error, "%s", PQresultErrorMessage(r));
			for (char *p = b->error; *p; p++)
				if (*p == '\n' || *p == '|')
					*p = ' ';
		}
		PQclear(r);
	}
	if (!b->ok)
	{
		fprintf(stderr, "  build failed: %s\n", b->error);
		return b;
	}
	{
		char	   *s = query_value(c, "SELECT pg_relation_size('bench_idx')");

		b->size_bytes = s ? atoll(s) : 0;
		free(s);
	}
	if (m->kind == K_GMMIVF)
	{
		r = PQexec(c, "SELECT * FROM flashgmm_index_info('bench_idx')");
		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		{
			size_t		l = 0;

			for (int i = 0; i < PQnfields(r) && l < sizeof b->info - 64; i++)
				l += snprintf(b->info + l, sizeof b->info - l, "%s%s=%s", i ? ", " : "",
							  PQfname(r, i), PQgetvalue(r, 0, i));
		}
		PQclear(r);
		/* list balance, when the extension has flashgmm_lists() */
		r = PQexec(c, "SELECT max(entries), round(avg(entries), 1), "
				   "round(max(entries) / nullif(avg(entries), 0), 2) FROM flashgmm_lists('bench_idx')");
		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
		{
			size_t		l = strlen(b->info);

			snprintf(b->info + l, sizeof b->info - l, "%slist entries: max %s, mean %s, max/mean %s",
					 l ? ", " : "", PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
		}
		PQclear(r);
	}
	fprintf(stderr, "  built in %.2f s, %.1f MB", b->seconds, b->size_bytes / 1048576.0);
	for (int i = 0; i < b->nphases; i++)
		fprintf(stderr, "; %s %.2f s", b->phases[i].phase, b->phases[i].seconds);
	fprintf(stderr, "%s%s\n", b->info[0] ? "; " : "", b->info);
	return b;
}

/* ------------------------------------------------------------------ output */
static void
machine_line(char *out, size_t n, PGconn *c)
{
	struct utsname u;
	char		cpu[512] = "?",
				line[512];
	FILE	   *f = fopen("/proc/cpuinfo", "r");
	double		la[3] = {0};
	char	   *pgv = query_value(c, "SELECT split_part(version(), ' on ', 1)");
	char	   *fv = query_value(c, "SELECT extversion FROM pg_extension WHERE extname = 'flashgmm'");
	char	   *vv = query_value(c, "SELECT extversion FROM pg_extension WHERE extname = 'vector'");

	while (f && fgets(line, sizeof line, f))
		if (strncmp(line, "model name", 10) == 0)
		{
			char	   *p = strchr(line, ':');

			snprintf(cpu, sizeof cpu, "%s", p ? p + 2 : line);
			cpu[strcspn(cpu, "\n")] = 0;
			break;
		}
	if (f)
		fclose(f);
	uname(&u);
	getloadavg(la, 3);
	snprintf(out, n, "%s, %ld cores, %s %s; %s; flashgmm %s; pgvector %s; load average %.2f %.2f %.2f",
			 cpu, sysconf(_SC_NPROCESSORS_ONLN), u.sysname, u.release, pgv ? pgv : "?",
			 fv ? fv : "?", vv ? vv : "not installed", la[0], la[1], la[2]);
	free(pgv);
	free(fv);
	free(vv);
}

static const char *
setting_str(const QueryResult *r)
{
	static char buf[4][48];
	static int	n;
	char	   *b = buf[n++ % 4];

	if (strcmp(r->param_name, "-") == 0)
		return "seq scan";
	snprintf(b, 48, "%s=%d", r->param_name, r->param);
	return b;
}

/*
 * Per method at a target recall: the first grid point (in grid order) that reaches it, and the
 * QPS and distances per query interpolated at exactly the target between that point and the one
 * before it (linear in recall, geometric in cost).
 */
static int
interpolate(const char *method, double target, double *qps, double *dist, int *at)
{
	int			prev = -1;

	for (int j = 0; j < nresults; j++)
	{
		QueryResult *r = &results[j];

		if (strcmp(r->method, method) != 0)
			continue;
		if (r->recall >= target)
		{
			*at = j;
			if (prev < 0 || results[prev].recall >= r->recall)
			{
				*qps = r->qps1;
				*dist = r->have_counters ? r->dist : NAN;
			}
			else
			{
				QueryResult *a = &results[prev];
				double		f = (target - a->recall) / (r->recall - a->recall);

				*qps = exp(log(a->qps1) + f * (log(r->qps1) - log(a->qps1)));
				*dist = r->have_counters && a->have_counters && a->dist > 0 ?
					exp(log(a->dist) + f * (log(r->dist) - log(a->dist))) : NAN;
			}
			return 1;
		}
		prev = j;
	}
	return 0;
}

static void
write_targets(FILE *f, double target)
{
	fprintf(f, "\n**At recall@10 = %.2f**: per method, the first grid point that reaches it, and QPS and distances "
			"interpolated at exactly %.2f between it and the grid point before (linear in recall, geometric in cost).\n\n",
			target, target);
	fprintf(f, "| method | first setting reaching it | its recall@10 | its QPS (1 client) | its QPS (%d clients) | its distances / query | QPS at %.2f (interp.) | distances / query at %.2f (interp.) |\n",
			opt.clients, target, target);
	fprintf(f, "|---|---|---:|---:|---:|---:|---:|---:|\n");
	for (int i = 0; i < nresults; i++)
	{
		int			seen = 0,
					at = -1;
		double		qps = 0,
					dist = NAN;

		for (int j = 0; j < i; j++)
			if (strcmp(results[j].method, results[i].method) == 0)
				seen = 1;
		if (seen)
			continue;
		if (!interpolate(results[i].method, target, &qps, &dist, &at))
			fprintf(f, "| %s | not reached on the grid | | | | | | |\n", results[i].method);
		else
		{
			QueryResult *r = &results[at];
			char		d[32] = "n/a",
						di[32] = "n/a";

			if (r->have_counters)
				snprintf(d, sizeof d, "%.0f", r->dist);
			if (!isnan(dist))
				snprintf(di, sizeof di, "%.0f", dist);
			fprintf(f, "| %s | %s | %.4f | %.1f | %.1f | %s | %.1f | %s |\n", r->method, setting_str(r),
					r->recall, r->qps1, r->qpsN, d, qps, di);
		}
	}
}

static void
write_outputs(PGconn *c, const char *machine_before, double total_s)
{
	char		path[1024],
				machine_after[1024];
	FILE	   *f;

	machine_line(machine_after, sizeof machine_after, c);
	mkdir(opt.out, 0755);
	snprintf(path, sizeof path, "%s/results.tsv", opt.out);
	f = fopen(path, "w");
	if (!f)
		die("cannot write %s", path);
	fprintf(f, "# method\tparam_name\tparam\trecall\tstrict_recall\tqps1\tqpsN\tp50_ms\tp99_ms\tdistances\tlists\n");
	for (int i = 0; i < nresults; i++)
	{
		QueryResult *r = &results[i];

		fprintf(f, "%s\t%s\t%d\t%.5f\t%.5f\t%.2f\t%.2f\t%.4f\t%.4f\t%s\t%.2f\n", r->method, r->param_name,
				r->param, r->recall, r->strict_recall, r->qps1, r->qpsN, r->p50, r->p99,
				r->have_counters ? (snprintf(path, sizeof path, "%.1f", r->dist), path) : "NaN", r->lists);
	}
	fclose(f);

	snprintf(path, sizeof path, "%s/results.md", opt.out);
	f = fopen(path, "w");
	if (!f)
		die("cannot write %s", path);
	fprintf(f, "### %s: %d base vectors, %d dimensions, %d queries (exact: %d), %s\n\n", opt.name, nbase, dim,
			opt.nq < nquery ? opt.nq : nquery, opt.exact_nq < nquery ? opt.exact_nq : nquery, opt.metric);
	fprintf(f, "- machine (start): %s\n- machine (end): %s\n", machine_before, machine_after);
	fprintf(f, "- settings: lists = %d, clients = 1 and %d, max_parallel_workers_per_gather = 0, "
			"recall@10 tie-aware against groundtruth.ivecs; %.0f s in all\n\n", opt.lists, opt.clients, total_s);
	fprintf(f, "| build | index | time (s) | phases (s) | size (MB) | notes |\n|---|---|---:|---|---:|---|\n");
	for (int i = 0; i < nbuilds; i++)
	{
		BuildResult *b = &builds[i];
		char		ph[1024] = "";
		size_t		l = 0;

		for (int j = 0; j < b->nphases; j++)
			l += snprintf(ph + l, sizeof ph - l, "%s%s %.2f", j ? "; " : "", b->phases[j].phase, b->phases[j].seconds);
		fprintf(f, "| %s | `%s` | %.2f | %s | %.1f | %s |\n", b->method, b->index_def, b->seconds, ph,
				b->size_bytes / 1048576.0, b->ok ? b->info : b->error);
	}
	fprintf(f, "\n| method | setting | recall@10 | strict recall | QPS (1 client) | QPS (%d clients) | p50 ms | p99 ms | distances / query | lists probed |\n",
			opt.clients);
	fprintf(f, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (int i = 0; i < nresults; i++)
	{
		QueryResult *r = &results[i];
		char		d[32] = "n/a",
					l[32] = "";

		if (r->have_counters)
			snprintf(d, sizeof d, "%.0f", r->dist);
		if (r->lists > 0)
			snprintf(l, sizeof l, "%.1f", r->lists);
		fprintf(f, "| %s | %s | %.4f | %.4f | %.1f | %.1f | %.3f | %.3f | %s | %s |\n", r->method, setting_str(r),
				r->recall, r->strict_recall, r->qps1, r->qpsN, r->p50, r->p99, d, l);
	}
	write_targets(f, 0.90);
	write_targets(f, 0.95);
	write_targets(f, 0.99);
	fclose(f);

	/* gnuplot */
	snprintf(path, sizeof path, "%s/plot.gp", opt.out);
	f = fopen(path, "w");
	if (f)
	{
		char		names[MAXM][64];
		int			nn = 0;

		for (int i = 0; i < nresults; i++)
		{
			int			seen = 0;

			for (int j = 0; j < nn; j++)
				if (strcmp(names[j], results[i].method) == 0)
					seen = 1;
			if (!seen && nn < MAXM)
				snprintf(names[nn++], 64, "%s", results[i].method);
		}
		fprintf(f, "set terminal pngcairo size 1000,600 noenhanced\nset datafile separator '\\t'\n"
				"set key outside right top\nset grid\nset logscale y\nset xlabel 'recall@10'\n");
		for (int plot = 0; plot < 2; plot++)
		{
			int			any = 0;

			for (int j = 0; j < nn; j++)
				if (!plot || (strcmp(names[j], "ivfflat") != 0 && strcmp(names[j], "hnsw") != 0))
					any = 1;
			if (!any)
				continue;		/* no method with distance counters */
			fprintf(f, "set output '%s/%s'\n", opt.out, plot ? "recall_distances.png" : "recall_qps.png");
			if (plot)
				fprintf(f, "set ylabel 'distance computations per query (log)'\nset title '%s: recall@10 against distances computed (%d vectors)'\n",
						opt.name, nbase);
			else
				fprintf(f, "set ylabel 'queries per second, 1 client (log)'\nset title '%s: recall@10 against QPS (%d vectors, %d-d)'\n",
						opt.name, nbase, dim);
			fprintf(f, "plot ");
			for (int j = 0, first = 1; j < nn; j++)
			{
				if (plot && (strcmp(names[j], "ivfflat") == 0 || strcmp(names[j], "hnsw") == 0))
					continue;
				fprintf(f, "%s'%s/results.tsv' using (strcol(1) eq '%s' ? $4 : NaN):%d with linespoints title '%s'",
						first ? "" : ", \\\n     ", opt.out, names[j], plot ? 10 : 6, names[j]);
				first = 0;
			}
			fprintf(f, "\n");
		}
		fclose(f);
		{
			char		cmd[1200];

			snprintf(cmd, sizeof cmd, "command -v gnuplot >/dev/null && gnuplot '%s/plot.gp' 2>&1", opt.out);
			if (system(cmd) != 0)
				fprintf(stderr, "gnuplot not run (not installed or failed): no PNG plots\n");
		}
	}
	fprintf(stderr, "wrote %s/results.md, results.tsv, recall_qps.png, recall_distances.png\n", opt.out);
}

/* ------------------------------------------------------------------ main */
static void
usage(void)
{
	fprintf(stderr,
			"usage: flashgmm_bench --data DIR [options]\n"
			"  --name NAME         data set name (default: basename of DIR)\n"
			"  --db DB             database (default flashgmm_bench; created when missing)\n"
			"  --out DIR           output folder (default /tmp/flashgmm-bench/NAME)\n"
			"  --metric l2|cosine|ip   (default: cosine for glove*/lex*, else l2)\n"
			"  --lists L           lists for gmmivf and ivfflat (default: sqrt(N), rounded)\n"
			"  --probes 1,2,4,...  probes grid (gmmivf, ivfflat)\n"
			"  --ef 10,20,...      hnsw ef_search grid\n"
			"  --clients C         clients of the multi-client pass (default 2)\n"
			"  --queries Q         queries used (default all); --exact-queries Q for exact search\n"
			"  --max-base N        load only the first N base vectors (smoke tests; recall then meaningless)\n"
			"  --methods a,b,...   gmmivf,gmmivf-hard,gmmivf-diag,gmmivf-posterior,exact,ivfflat,hnsw (default all)\n"
			"  --variant NAME:OPTS extra gmmivf index WITH (lists = L, OPTS)\n"
			"  --reuse             keep the table when it already holds the data\n"
			"  --quick             smoke test: few queries, short grid, checks recall; prints N passed, N failed\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	char		path[1200],
				sql[1024],
				machine[1024];
	PGconn	   *c,
			   *c2;
	Method		methods[MAXM];
	int			nm = 0,
				have_vector = 0,
				have_counters = 0,
				have_flashgmm = 0;
	int			qd,
				gn;
	double		tstart = now();

	memset(&opt, 0, sizeof opt);
	opt.db = "flashgmm_bench";
	opt.clients = 2;
	opt.nq = 1 << 30;
	opt.exact_nq = 200;
	snprintf(opt.methods, sizeof opt.methods, "all");
	for (int i = 1; i < argc; i++)
	{
#define ARG() (i + 1 < argc ? argv[++i] : (usage(), ""))
		if (!strcmp(argv[i], "--data"))
			opt.data = ARG();
		else if (!strcmp(argv[i], "--name"))
			opt.name = ARG();
		else if (!strcmp(argv[i], "--db"))
			opt.db = ARG();
		else if (!strcmp(argv[i], "--out"))
			opt.out = ARG();
		else if (!strcmp(argv[i], "--metric"))
			opt.metric = ARG();
		else if (!strcmp(argv[i], "--lists"))
			opt.lists = atoi(ARG());
		else if (!strcmp(argv[i], "--probes"))
			opt.nprobes = parse_list(ARG(), opt.probes);
		else if (!strcmp(argv[i], "--ef"))
			opt.nefs = parse_list(ARG(), opt.efs);
		else if (!strcmp(argv[i], "--clients"))
			opt.clients = atoi(ARG());
		else if (!strcmp(argv[i], "--queries"))
			opt.nq = atoi(ARG());
		else if (!strcmp(argv[i], "--exact-queries"))
			opt.exact_nq = atoi(ARG());
		else if (!strcmp(argv[i], "--max-base"))
			opt.max_base = atoi(ARG());
		else if (!strcmp(argv[i], "--methods"))
			snprintf(opt.methods, sizeof opt.methods, "%s", ARG());
		else if (!strcmp(argv[i], "--variant") && opt.nvariants < 8)
			snprintf(opt.variants[opt.nvariants++], sizeof opt.variants[0], "%s", ARG());
		else if (!strcmp(argv[i], "--reuse"))
			opt.reuse = 1;
		else if (!strcmp(argv[i], "--quick"))
			opt.quick = 1;
		else
			usage();
	}
	if (!opt.data)
		usage();
	if (!opt.name)
	{
		const char *s = strrchr(opt.data, '/');

		opt.name = s && s[1] ? s + 1 : opt.data;
	}
	if (!opt.metric)
		opt.metric = (strncmp(opt.name, "glove", 5) == 0 || strncmp(opt.name, "lex", 3) == 0) ? "cosine" : "l2";
	if (!opt.out)
	{
		static char o[512];

		snprintf(o, sizeof o, "/tmp/flashgmm-bench/%s", opt.name);
		mkdir("/tmp/flashgmm-bench", 0755);
		opt.out = o;
	}
	if (opt.quick)
	{
		if (opt.nq > 200)
			opt.nq = 100;
		if (opt.exact_nq > 50)
			opt.exact_nq = 50;
		if (!opt.nprobes)
			opt.nprobes = parse_list("1,4,12,32", opt.probes);
		if (!opt.nefs)
			opt.nefs = parse_list("10,40", opt.efs);
		if (!strcmp(opt.methods, "all"))
			snprintf(opt.methods, sizeof opt.methods, "gmmivf,gmmivf-hard,exact");
	}

	/* data */
	snprintf(path, sizeof path, "%s/base.fvecs", opt.data);
	base = read_vecs(path, &nbase, &dim, opt.max_base);
	snprintf(path, sizeof path, "%s/query.fvecs", opt.data);
	queries = read_vecs(path, &nquery, &qd, 0);
	if (qd != dim)
		die("query dimension %d differs from base dimension %d", qd, dim);
	snprintf(path, sizeof path, "%s/groundtruth.ivecs", opt.data);
	gt = read_vecs(path, &gn, &gtk, 0);
	if (gn != nquery || gtk < K)
		die("groundtruth has %d rows of %d (want %d rows of >= %d)", gn, gtk, nquery, K);
	if (opt.max_base > 0)
		fprintf(stderr, "note: --max-base %d: groundtruth ids beyond it are unreachable\n", opt.max_base);
	if (opt.lists <= 0)
		opt.lists = (int) lround(sqrt((double) nbase));
	if (!opt.nprobes)
	{
		/* about 1/64 .. 1/4 of the lists, plus the small end */
		int			grid[] = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256};

		for (int i = 0; i < 16; i++)
			if (grid[i] <= opt.lists / 3 || grid[i] <= 4)
				opt.probes[opt.nprobes++] = grid[i];
	}
	if (!opt.nefs)
		opt.nefs = parse_list("10,16,24,40,64,100,160,256,400", opt.efs);
	qtext_arr = xmalloc(sizeof(char *) * nquery);
	qtext_vec = xmalloc(sizeof(char *) * nquery);
	for (int q = 0; q < nquery; q++)
	{
		qtext_arr[q] = vec_text(queries + (size_t) q * dim, dim, '{', '}');
		qtext_vec[q] = vec_text(queries + (size_t) q * dim, dim, '[', ']');
	}
	snprintf(table, sizeof table, "bench_");
	for (const char *p = opt.name; *p && strlen(table) < 60; p++)
	{
		char		ch = (*p >= 'A' && *p <= 'Z') ? *p + 32 : *p;

		size_t		l = strlen(table);

		table[l] = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ? ch : '_';
		table[l + 1] = 0;
	}
	if (opt.max_base > 0)
		snprintf(table + strlen(table), sizeof table - strlen(table), "_%d", opt.max_base);

	/* database */
	c = connect_db("postgres");
	snprintf(sql, sizeof sql, "SELECT 1 FROM pg_database WHERE datname = '%s'", opt.db);
	{
		char	   *e = query_value(c, sql);

		if (!e)
		{
			snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", opt.db);
			exec_must(c, sql);
		}
		free(e);
	}
	PQfinish(c);
	c = connect_db(opt.db);
	c2 = connect_db(opt.db);
	exec_ok(c, "SET client_min_messages = warning", 1);
	have_flashgmm = exec_ok(c, "CREATE EXTENSION IF NOT EXISTS flashgmm", 0) == 0;
	if (!have_flashgmm)
		fprintf(stderr, "flashgmm is not installed here: gmmivf and exact search skipped\n");
	{
		char	   *v = query_value(c, "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'");

		if (v && (want("ivfflat") || want("hnsw")))
			have_vector = exec_ok(c, "CREATE EXTENSION IF NOT EXISTS vector", 0) == 0;
		if (!v && (want("ivfflat") || want("hnsw")))
			fprintf(stderr, "pgvector (extension \"vector\") is not installed: ivfflat and hnsw skipped\n");
		free(v);
	}
	{
		char	   *v = query_value(c, "SELECT 1 FROM pg_proc WHERE proname = 'flashgmm_last_scan'");

		have_counters = v != NULL;
		if (!v)
			fprintf(stderr, "flashgmm_last_scan() not found: no distance counts\n");
		free(v);
	}
	machine_line(machine, sizeof machine, c);
	fprintf(stderr, "%s: %d x %d, %d queries, metric %s, lists %d\n%s\n", opt.name, nbase, dim, nquery,
			opt.metric, opt.lists, machine);

	load_base(c);

	/* methods */
#define ADD(nm_, kind_, with_, sess_, share_) do { \
		snprintf(methods[nm].name, 64, "%s", nm_); methods[nm].kind = kind_; \
		snprintf(methods[nm].with, sizeof methods[nm].with, "%s", with_); snprintf(methods[nm].session, 256, "%s", sess_); \
		methods[nm].shares_index = share_; nm++; } while (0)
	{
		char		w[320];

		snprintf(w, sizeof w, "lists = %d", opt.lists);
		if (have_flashgmm && (want("gmmivf") || want("gmmivf-posterior")))
		{
			ADD("gmmivf", K_GMMIVF, w, "", 0);
			if (want("gmmivf-posterior"))
				ADD("gmmivf-posterior", K_GMMIVF, w, "SET flashgmm.probe_order = posterior", 1);
		}
		if (have_flashgmm && want("gmmivf-hard"))
		{
			snprintf(w, sizeof w, "lists = %d, max_assign = 1", opt.lists);
			ADD("gmmivf-hard", K_GMMIVF, w, "", 0);
		}
		if (have_flashgmm && want("gmmivf-diag"))
		{
			snprintf(w, sizeof w, "lists = %d, covariance = 'diag'", opt.lists);
			ADD("gmmivf-diag", K_GMMIVF, w, "", 0);
		}
		for (int i = 0; have_flashgmm && i < opt.nvariants && nm < MAXM - 4; i++)
		{
			char	   *colon = strchr(opt.variants[i], ':');

			if (!colon)
				die("--variant wants NAME:OPTIONS");
			*colon = 0;
			snprintf(w, sizeof w, "lists = %d, %s", opt.lists, colon + 1);
			ADD(opt.variants[i], K_GMMIVF, w, "", 0);
		}
		if (have_flashgmm && want("exact"))
			ADD("exact", K_EXACT, "", "", 0);
		if (have_vector && want("ivfflat"))
		{
			snprintf(w, sizeof w, "lists = %d", opt.lists);
			ADD("ivfflat", K_IVFFLAT, w, "", 0);
		}
		if (have_vector && want("hnsw"))
			ADD("hnsw", K_HNSW, "m = 16, ef_construction = 64", "", 0);
	}
	if (have_vector)
	{
		char		cnt[256];
		char	   *n;

		snprintf(cnt, sizeof cnt, "SELECT count(*) FROM %s_pgv", table);
		n = query_value(c, cnt);
		if (!n || atoi(n) != nbase)
		{
			double		t0 = now();

			snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s_pgv; CREATE TABLE %s_pgv AS SELECT id, v::vector(%d) AS v FROM %s; "
					 "ALTER TABLE %s_pgv ADD PRIMARY KEY (id)",
					 table, table, dim, table, table);
			exec_must(c, sql);
			snprintf(sql, sizeof sql, "VACUUM ANALYZE %s_pgv", table);
			exec_must(c, sql);
			fprintf(stderr, "copied the vectors into %s_pgv (pgvector type) in %.1f s\n", table, now() - t0);
		}
		free(n);
	}

	/* run */
	for (int i = 0; i < nm; i++)
	{
		Method	   *m = &methods[i];
		int			ok = 1;

		if (m->kind == K_EXACT)
		{
			drop_indexes(c);
			run_config(m, 0, have_counters);
			continue;
		}
		if (!m->shares_index)
			ok = build_index(c, c2, m)->ok;
		else
		{
			/* the shared index was built by the previous method: check that it exists */
			char	   *e = query_value(c, "SELECT to_regclass('bench_idx')");

			ok = e != NULL;
			free(e);
		}
		if (!ok)
			continue;
		if (m->kind == K_HNSW)
			for (int j = 0; j < opt.nefs; j++)
				run_config(m, opt.efs[j], have_counters);
		else
			for (int j = 0; j < opt.nprobes; j++)
				if (opt.probes[j] <= opt.lists)
					run_config(m, opt.probes[j], have_counters);
	}
	drop_indexes(c);

	write_outputs(c, machine, now() - tstart);

	/* quick mode: sanity checks, never times */
	if (opt.quick)
	{
		int			pass = 0,
					fail = 0;

#define CHECK(cond, ...) do { if (cond) { pass++; printf("ok     "); } else { fail++; printf("FAILED "); } \
		printf(__VA_ARGS__); printf("\n"); } while (0)
		CHECK(have_flashgmm, "CREATE EXTENSION flashgmm");
		for (int i = 0; i < nbuilds; i++)
			CHECK(builds[i].ok, "build %s%s%s", builds[i].method, builds[i].ok ? "" : ": ", builds[i].error);
		for (int i = 0; i < nm; i++)
		{
			double		best = -1,
						first = -1;
			int			n = 0;

			for (int j = 0; j < nresults; j++)
				if (strcmp(results[j].method, methods[i].name) == 0)
				{
					if (first < 0)
						first = results[j].recall;
					if (results[j].recall > best)
						best = results[j].recall;
					n++;
				}
			if (methods[i].kind == K_EXACT)
				CHECK(n == 1 && best >= 0.999, "exact search: recall@10 %.4f (want 1)", best);
			else
			{
				CHECK(n > 0, "%s: %d grid points ran", methods[i].name, n);
				CHECK(best >= 0.90, "%s: best recall@10 on the grid %.4f >= 0.90", methods[i].name, best);
				CHECK(first >= 0.05 && first <= best, "%s: recall at the smallest setting %.4f is in [0.05, best]",
					  methods[i].name, first);
			}
		}
		if (have_counters)
			for (int j = 0; j < nresults; j++)
				if (strcmp(results[j].method, "gmmivf") == 0)
				{
					CHECK(results[j].have_counters && results[j].dist > 0 && results[j].dist <= nbase,
						  "gmmivf probes=%d: %.0f distances per query, in (0, N]", results[j].param, results[j].dist);
					break;
				}
		snprintf(path, sizeof path, "%s/results.md", opt.out);
		CHECK(access(path, R_OK) == 0, "wrote %s", path);
		printf("%d passed, %d failed\n", pass, fail);
		return fail ? 1 : 0;
	}
	PQfinish(c);
	PQfinish(c2);
	return 0;
}

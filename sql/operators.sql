-- Distances on real[] and their operators.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS flashgmm;
RESET client_min_messages;
SELECT '{1,2,3}'::real[] <-> '{4,6,3}'::real[] AS l2,
       l2_squared_distance('{1,2,3}', '{4,6,3}') AS l2sq,
       '{1,2,3}'::real[] <#> '{4,6,3}'::real[] AS neg_ip,
       inner_product('{1,2,3}', '{4,6,3}') AS ip,
       round(('{1,0}'::real[] <=> '{1,1}'::real[])::numeric, 6) AS cosine,
       vector_norm('{3,4}') AS norm;
-- zero vectors have no direction: cosine distance 1
SELECT '{0,0}'::real[] <=> '{1,1}'::real[] AS zero_cosine;
-- bad input
SELECT '{1,2}'::real[] <-> '{1,2,3}'::real[];
SELECT '{1,NaN}'::real[] <-> '{1,2}'::real[];
SELECT '{1,Infinity}'::real[] <-> '{1,2}'::real[];
SELECT '{}'::real[] <-> '{}'::real[];
SELECT '{{1,2},{3,4}}'::real[] <-> '{{1,2},{3,4}}'::real[];
SELECT '{1,NULL}'::real[] <-> '{1,2}'::real[];
SELECT NULL::real[] <-> '{1,2}'::real[] IS NULL AS strict;

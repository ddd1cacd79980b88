-- Values: de-quantization and vectors. Plain SQL: no Python runs for these. The format's
-- facts in braces (nodata, the de-quantization step, the bands) are filled in from
-- aefsql/aef.py when the macros are registered (duck/registration.py): written once.

-- The publisher's de-quantization: sign(v) * (|v| / 127.5)^2; -128 is nodata (NULL).
CREATE OR REPLACE TEMP MACRO aef_dequantize(v) AS
    CAST(CASE WHEN v = {nodata} THEN NULL ELSE sign(v) * pow(abs(v) / {step}, 2) END AS FLOAT);

-- The 64 band names, A00..A63, in order.
CREATE OR REPLACE TEMP MACRO aef_band_names() AS {band_names};

-- A list as FLOAT[64] when all 64 elements are present, else NULL.
CREATE OR REPLACE TEMP MACRO __aef_complete_vector(v) AS
    CASE WHEN list_aggregate(v, 'count') = {band_count} THEN CAST(v AS FLOAT[{band_count}]) END;

-- An embedding struct as FLOAT[64] (de-quantized, band by band: aef_dequantize(embedding.A00),
-- …), for array_cosine_similarity and friends.
-- NULL when the struct is NULL or any band is nodata: DuckDB's array functions refuse NULL
-- elements, and AEF masks all 64 bands together anyway.
CREATE OR REPLACE TEMP MACRO aef_vector(embedding) AS
    __aef_complete_vector({dequantized_bands});

-- Values: de-quantization and vectors. Plain SQL: no Python runs for these.

-- The publisher's de-quantization: sign(v) * (|v| / 127.5)^2; -128 is nodata (NULL).
CREATE OR REPLACE TEMP MACRO aef_dequantize(v) AS
    CAST(CASE WHEN v = -128 THEN NULL ELSE sign(v) * pow(abs(v) / 127.5, 2) END AS FLOAT);

-- The 64 band names, A00..A63, in order.
CREATE OR REPLACE TEMP MACRO aef_band_names() AS {band_names};

-- A list as FLOAT[64] when all 64 elements are present, else NULL.
CREATE OR REPLACE TEMP MACRO __aef_complete_vector(v) AS
    CASE WHEN list_aggregate(v, 'count') = 64 THEN CAST(v AS FLOAT[64]) END;

-- An embedding struct as FLOAT[64] (de-quantized), for array_cosine_similarity and friends.
-- NULL when the struct is NULL or any band is nodata: DuckDB's array functions refuse NULL
-- elements, and AEF masks all 64 bands together anyway.
CREATE OR REPLACE TEMP MACRO aef_vector(embedding) AS
    __aef_complete_vector([
        aef_dequantize(embedding.A00), aef_dequantize(embedding.A01), aef_dequantize(embedding.A02), aef_dequantize(embedding.A03),
        aef_dequantize(embedding.A04), aef_dequantize(embedding.A05), aef_dequantize(embedding.A06), aef_dequantize(embedding.A07),
        aef_dequantize(embedding.A08), aef_dequantize(embedding.A09), aef_dequantize(embedding.A10), aef_dequantize(embedding.A11),
        aef_dequantize(embedding.A12), aef_dequantize(embedding.A13), aef_dequantize(embedding.A14), aef_dequantize(embedding.A15),
        aef_dequantize(embedding.A16), aef_dequantize(embedding.A17), aef_dequantize(embedding.A18), aef_dequantize(embedding.A19),
        aef_dequantize(embedding.A20), aef_dequantize(embedding.A21), aef_dequantize(embedding.A22), aef_dequantize(embedding.A23),
        aef_dequantize(embedding.A24), aef_dequantize(embedding.A25), aef_dequantize(embedding.A26), aef_dequantize(embedding.A27),
        aef_dequantize(embedding.A28), aef_dequantize(embedding.A29), aef_dequantize(embedding.A30), aef_dequantize(embedding.A31),
        aef_dequantize(embedding.A32), aef_dequantize(embedding.A33), aef_dequantize(embedding.A34), aef_dequantize(embedding.A35),
        aef_dequantize(embedding.A36), aef_dequantize(embedding.A37), aef_dequantize(embedding.A38), aef_dequantize(embedding.A39),
        aef_dequantize(embedding.A40), aef_dequantize(embedding.A41), aef_dequantize(embedding.A42), aef_dequantize(embedding.A43),
        aef_dequantize(embedding.A44), aef_dequantize(embedding.A45), aef_dequantize(embedding.A46), aef_dequantize(embedding.A47),
        aef_dequantize(embedding.A48), aef_dequantize(embedding.A49), aef_dequantize(embedding.A50), aef_dequantize(embedding.A51),
        aef_dequantize(embedding.A52), aef_dequantize(embedding.A53), aef_dequantize(embedding.A54), aef_dequantize(embedding.A55),
        aef_dequantize(embedding.A56), aef_dequantize(embedding.A57), aef_dequantize(embedding.A58), aef_dequantize(embedding.A59),
        aef_dequantize(embedding.A60), aef_dequantize(embedding.A61), aef_dequantize(embedding.A62), aef_dequantize(embedding.A63)
    ]);

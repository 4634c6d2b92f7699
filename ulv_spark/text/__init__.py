"""Pretrained text encoder over product and review texts: normalisation, encoder, UDF, embed job."""

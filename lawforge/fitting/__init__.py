"""Fitting laws to data: the batched Levenberg-Marquardt fitter and scoring of given laws."""

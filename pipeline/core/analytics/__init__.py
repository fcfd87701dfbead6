"""Analytics: KPI and calibration views, their queries, forecasts and the periodic reports."""

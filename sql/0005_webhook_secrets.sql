-- Each schedule's Standard Webhooks signing secret, sealed with AES-GCM (shared/secrets.py): `kid:base64`.
ALTER TABLE schedules ADD COLUMN webhook_secret text;

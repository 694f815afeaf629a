# The live-event outbox is core's now (``core.0001_initial``); its table stays.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0007_leases'),
        ('core', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='LiveEvent')],
            database_operations=[],
        ),
    ]

# Served names unique without regard to case (issue 12): `TINY` and `tiny` are one name.

import django.core.validators
import django.db.models.functions.text
from django.db import migrations, models


def refuse_case_duplicates(apps, schema_editor):
    """Say which names clash rather than fail on the constraint: renaming a served name
    would break its clients, so an operator chooses (delete or recreate one of them)."""
    Deployment = apps.get_model("scheduling", "Deployment")
    seen: dict[str, str] = {}
    clashes = []
    for name in Deployment.objects.order_by("served_name").values_list("served_name", flat=True):
        if name.lower() in seen:
            clashes.append(f"{seen[name.lower()]!r} and {name!r}")
        seen.setdefault(name.lower(), name)
    if clashes:
        raise RuntimeError(
            "Served names must be unique without regard to case; delete one deployment of "
            "each pair, then migrate again: " + ", ".join(clashes)
        )


class Migration(migrations.Migration):

    dependencies = [
        ("scheduling", "0005_memory_release"),
    ]

    operations = [
        migrations.RunPython(refuse_case_duplicates, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="deployment",
            name="served_name",
            field=models.CharField(
                db_index=True,
                max_length=128,
                validators=[
                    django.core.validators.RegexValidator(
                        "^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$",
                        "Use letters, digits and . _ : / - (at most 128 characters), as clients will type it.",
                    )
                ],
            ),
        ),
        migrations.AddConstraint(
            model_name="deployment",
            constraint=models.UniqueConstraint(
                django.db.models.functions.text.Lower("served_name"),
                name="deployment_served_name_unique_any_case",
            ),
        ),
    ]
